//! `ehr dev`: anvil + Kubo + the contract with demo data + the gateway, up until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;
use clap::Args;

use crate::chain::{Deployment, EhrChain, PatientAddr};
use crate::config::{AnvilSettings, Tools};
use crate::gateway::{AppState, Keyring, RecordsConfig};
use crate::ipfs::KuboClient;
use crate::records::{FHIR_JSON, ShareNodeRef};
use crate::stack::{KuboOptions, ManagedChild, Supervisor, start_anvil, start_kubo};
use crate::web::{AccountStore, Role, WebState};

/// `ehr dev` flags.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Anvil settings. Default: anvil.toml.
    #[arg(long, env = "EHR_ANVIL_CONFIG", default_value = "anvil.toml")]
    anvil_config: PathBuf,
    /// Folder for the Kubo repo and deployment file. Default: .ehr.
    #[arg(long, env = "EHR_STATE_DIR", default_value = ".ehr")]
    state_dir: PathBuf,
    /// Project folder holding the tools from scripts/setup. Default: current folder.
    #[arg(long, env = "EHR_PROJECT_DIR", default_value = ".")]
    project_dir: PathBuf,
    /// Gateway port on 127.0.0.1. Default: 8080.
    #[arg(long, env = "EHR_GATEWAY_PORT", default_value_t = 8080)]
    gateway_port: u16,
    /// Kubo RPC API port. Default: 5001.
    #[arg(long, env = "EHR_KUBO_API_PORT", default_value_t = 5001)]
    kubo_api_port: u16,
    /// Kubo HTTP gateway port. Default: 8081.
    #[arg(long, env = "EHR_KUBO_GATEWAY_PORT", default_value_t = 8081)]
    kubo_gateway_port: u16,
    /// First of five consecutive share-node ports. Default: 7001.
    #[arg(long, env = "EHR_SHARE_NODE_BASE_PORT", default_value_t = 7001)]
    share_node_base_port: u16,
    /// Shares needed to read a record (of 5). Default: 3.
    #[arg(long, env = "EHR_THRESHOLD", default_value_t = 3)]
    threshold: u8,
    /// Mark cookies `Secure` (when a TLS proxy is in front). Requests that arrive with
    /// `X-Forwarded-Proto: https` get `Secure` cookies anyway. Default: off.
    #[arg(long, env = "EHR_SECURE_COOKIES")]
    secure_cookies: bool,
    /// Start over: move the chain state, deployment file, share stores and web users of the
    /// state folder aside (into `<state-dir>/reset-<time>/`) and deploy a fresh contract.
    /// Without it, `ehr dev` refuses to deploy over data that belongs to a lost chain.
    #[arg(long)]
    reset: bool,
    /// Anvil port; overrides anvil.toml.
    #[arg(long, env = "EHR_ANVIL_PORT")]
    anvil_port: Option<u16>,
    /// The web database: `sqlite://PATH` or `mysql://USER:PASSWORD@HOST:PORT/DB`.
    /// Default: SQLite in `<state-dir>/web/ehr.db`. (Not `EHR_DATABASE_URL`, `ehr serve`'s:
    /// demo users with public passwords must never land in a deployment's database.)
    #[arg(long, env = "EHR_DEV_DATABASE_URL")]
    database_url: Option<String>,
    /// How long the gateway waits to anchor uploads that arrive close together in one
    /// transaction (a lone upload waits this long), in milliseconds.
    #[arg(long, env = "EHR_DEV_BATCH_WINDOW_MS", default_value_t = 50)]
    batch_window_ms: u64,
    /// Seconds before the ciphertext of an upload that was never anchored (cut off by a
    /// crash) is unpinned; above the share nodes' TTL for unanchored deposits. Default: 4200.
    #[arg(long, env = "EHR_DEV_ORPHAN_TTL_SECS", default_value_t = 4200)]
    orphan_ttl_secs: u64,
    /// Seconds a patient's device readings wait before they are sealed into one record.
    #[arg(long, env = "EHR_DEV_INGEST_WINDOW_SECS", default_value_t = 300)]
    ingest_window_secs: u64,
    /// Observations that seal a window before its time is up.
    #[arg(long, env = "EHR_DEV_INGEST_MAX_OBSERVATIONS", default_value_t = 2000)]
    ingest_max_observations: u64,
}

/// The demo cast, as indices into anvil's mnemonic accounts.
const OFFICE: u32 = 0;
/// The gateway's own account: it anchors batches of uploads.
const ANCHORER: u32 = 7;
/// The gateway's ingestion service: it seals devices' readings into records.
const INGESTOR: u32 = 8;
const DOCTORS: [u32; 3] = [1, 2, 6];
const PATIENTS: [(u32, u64, u64); 3] = [(3, 1, 1001), (4, 1, 1002), (5, 2, 2001)];

/// The demo record stored for the first patient on a fresh chain (synthetic, see demo/).
const DEMO_RECORD: &[u8] = include_bytes!("../../demo/patient-1-1001-visit.fhir.json");

/// The password of a demo web user: printed by `ehr dev`, development only.
fn demo_password(user: &str) -> String {
    format!("{user}-password")
}

/// Account `index` of the dev mnemonic.
///
/// # Errors
/// When the mnemonic is invalid.
pub fn demo_signer(settings: &AnvilSettings, index: u32) -> anyhow::Result<PrivateKeySigner> {
    super::keys::dev_signer(&settings.mnemonic, index)
}

/// Runs the stack until Ctrl-C / SIGTERM or until a child crashes.
///
/// # Errors
/// When a service fails to start, or a child crashes (with its last log lines).
pub async fn run(a: DevArgs) -> anyhow::Result<()> {
    let tools = Tools::in_project(&a.project_dir);
    crate::fsutil::private_dir(&a.state_dir)
        .with_context(|| format!("creating {}", a.state_dir.display()))?;
    let mut settings =
        AnvilSettings::load(&a.anvil_config).context("set --anvil-config/EHR_ANVIL_CONFIG")?;
    if let Some(p) = a.anvil_port {
        settings.port = p;
    }
    if settings.state_file.is_empty() {
        settings.state_file = a.state_dir.join("anvil-state.json").display().to_string();
    }
    if a.reset {
        reset(&a.state_dir, std::path::Path::new(&settings.state_file))?;
    }
    let mut supervisor = Supervisor::default();
    println!(
        "[dev] starting anvil {} (chain id {}, state {}: its transactions journaled {}after each anchored upload batch, the whole chain saved every 30 s and on exit)",
        settings.rpc_url(),
        settings.chain_id,
        settings.state_file,
        match settings.state_interval_secs {
            0 => String::new(),
            n => format!("within {n} s of a change, "),
        }
    );
    // ehr dev writes the state file itself (below): anvil only loads it and dumps on exit.
    let save_every = settings.state_interval_secs;
    settings.state_interval_secs = 0;
    // anvil keeps blocks in memory: an upload is acknowledged only once its anchor is in the
    // chain's journal on disk, and the journal is replayed before anvil starts.
    let durable = std::sync::Arc::new(crate::stack::AnvilState::new(
        settings.rpc_url(),
        &settings.state_file,
    ));
    recover_chain(&durable, &tools.anvil, &settings).await?;
    let anvil = start_anvil(&tools.anvil, &settings, true).await?;
    if save_every > 0 {
        durable.clone().spawn_saver(Duration::from_secs(save_every));
    }
    // Keep a recent good copy of the chain state, for a dump damaged by a kill mid-write; the
    // journal then holds only what came after that copy.
    let saver = durable.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            if let Err(e) = saver.back_up().await {
                tracing::warn!("backing up the chain state: {e}");
            }
        }
    });
    let (bin, s2, d2) = (tools.anvil.clone(), settings.clone(), durable.clone());
    supervisor.keep("anvil", anvil.child, move || {
        let (bin, s2, d2) = (bin.clone(), s2.clone(), d2.clone());
        async move {
            // No anvil before its journal is replayed: the supervisor tries again.
            recover_chain(&d2, &bin, &s2).await?;
            start_anvil(&bin, &s2, true).await.map(|n| n.child)
        }
    });
    println!(
        "[dev] starting Kubo (offline, loopback) with repo {}",
        a.state_dir.join("kubo").display()
    );
    let kubo_opts = KuboOptions {
        bin: tools.ipfs.clone(),
        repo: a.state_dir.join("kubo"),
        api_port: a.kubo_api_port,
        gateway_port: a.kubo_gateway_port,
        network: None,
    };
    let kubo = start_kubo(&kubo_opts, true).await?;
    let kubo_api = kubo.api_url.clone();
    supervisor.keep("kubo", kubo.child, move || {
        let o = kubo_opts.clone();
        async move { start_kubo(&o, true).await.map(|n| n.child) }
    });
    let ipfs = KuboClient::new(&kubo_api);
    let ipfs_version = ipfs.version().await?;

    let deployment_file = a.state_dir.join("deployment.json");
    let chain = deploy_or_reuse(&settings, &deployment_file, &durable).await?;
    let keyring = seed_demo(&settings, &chain).await?;

    let node_refs = start_share_nodes(&a, &settings, &chain, &mut supervisor).await?;
    // The gateway anchors web and REST uploads in batches with an account of its own.
    let anchorer = chain.with_signer(&settings.rpc_url(), demo_signer(&settings, ANCHORER)?)?;
    let batcher: std::sync::Arc<dyn crate::records::Anchoring> =
        crate::records::Batcher::spawn_durable(
            anchorer,
            crate::records::BatchSettings {
                window: std::time::Duration::from_millis(a.batch_window_ms),
                ..Default::default()
            },
            durable.clone(),
        );
    let records = RecordsConfig::new(node_refs.clone(), a.threshold).with_anchoring(batcher);
    seed_demo_record(&settings, &chain, &ipfs, &records).await?;
    records
        .sweeper(
            ipfs.clone(),
            crate::tls::client(),
            crate::records::SweepSettings::for_ttl(Duration::from_secs(a.orphan_ttl_secs)),
        )
        .spawn();
    let db_url = a
        .database_url
        .clone()
        .unwrap_or_else(|| crate::db::sqlite_in(&a.state_dir.join("web")));
    let db = crate::db::Database::open(&db_url)
        .await
        .context("the web database (set --database-url / EHR_DEV_DATABASE_URL)")?;
    println!("[dev] database {} ({})", db.url(), db.backend());
    let chain = chain.with_index_store(std::sync::Arc::new(crate::db::EventStore::new(db.clone())));
    let accounts = AccountStore::new(db.clone()).await?;
    // A state folder from before the database: its users keep their keys.
    let r = crate::web::import_web_dir(&a.state_dir.join("web"), &accounts).await?;
    if r.users > 0 {
        println!(
            "[dev] imported {} web users and {} API tokens from {}/web/users",
            r.users,
            r.tokens,
            a.state_dir.display()
        );
    }
    for s in &r.skipped {
        println!("[dev] WARNING: web user not imported: {s}");
    }
    let accounts = seed_web_users(&settings, accounts).await?;
    let tokens = crate::web::TokenStore::new(accounts.clone());
    let ingest = start_ingest(&a, &settings, &chain, &db, &ipfs, &records).await?;
    let state = AppState::new(&settings.rpc_url(), Some(chain.clone()), ipfs, keyring)
        .map_err(anyhow::Error::msg)?
        .with_records(records)
        .with_ingest(ingest)
        .with_database(db.clone())
        .with_tokens(std::sync::Arc::new(tokens.clone()));
    let web = WebState::new(state.clone(), accounts)
        .with_tokens(tokens)
        .with_danger_dev_faucet(demo_signer(&settings, OFFICE)?)
        .with_secure_cookies(a.secure_cookies);
    let app = crate::gateway::router(state).merge(crate::web::router(web));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.gateway_port))
        .await
        .with_context(|| {
            format!(
                "gateway port {} busy (set --gateway-port/EHR_GATEWAY_PORT)",
                a.gateway_port
            )
        })?;
    let gw = format!("http://127.0.0.1:{}", a.gateway_port);
    println!();
    println!(
        "  chain    {}  (chain id {}, contract {})",
        settings.rpc_url(),
        settings.chain_id,
        chain.address()
    );
    println!("  ipfs     {kubo_api}  (Kubo {})", ipfs_version.version);
    println!("  web      {gw}/  (log in as a demo user above, or sign up)");
    println!("  gateway  {gw}  (health: {gw}/health, API: {gw}/openapi.json)");
    for n in &node_refs {
        println!("  share    {}  (node {})", n.url, n.address);
    }
    println!(
        "  records  {}-of-{} shares needed",
        a.threshold,
        node_refs.len()
    );
    println!("  deployment file {}", deployment_file.display());
    println!();
    println!("ehr dev is up; Ctrl-C stops everything.");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .await
    });
    // Crashed children are restarted by the supervisor; only Ctrl-C / SIGTERM ends the stack.
    shutdown_signal().await;
    println!("\n[dev] stopping");
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    // No save of ours may land after anvil's exit dump.
    durable.stop().await;
    supervisor.stop().await;
    println!("[dev] stopped the share nodes, Kubo and anvil (chain state saved)");
    Ok(())
}

/// Moves what belongs to the current chain out of the way, keeping it: the deployment file,
/// the chain state (also when it lives outside the state folder), share stores and web users.
/// Replays the chain's journal before anvil starts. A failure leaves the journal in place and
/// anvil unstarted: started without it, the chain would give the journal's nonces to new
/// transactions, and the acknowledged ones could never be replayed.
async fn recover_chain(
    durable: &crate::stack::AnvilState,
    bin: &std::path::Path,
    settings: &AnvilSettings,
) -> Result<(), crate::stack::StackError> {
    let n = durable.recover(bin, settings).await?;
    if n > 0 {
        println!(
            "[dev] replayed the chain's journal ({n} transactions since the state file was saved)"
        );
    }
    Ok(())
}

fn reset(state_dir: &std::path::Path, chain_state: &std::path::Path) -> anyhow::Result<()> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A folder of its own, even for two resets within one second.
    let aside = (0..)
        .map(|n| {
            state_dir.join(if n == 0 {
                format!("reset-{secs}")
            } else {
                format!("reset-{secs}-{n}")
            })
        })
        .find(|p| std::fs::create_dir(p).is_ok())
        .context("creating the reset folder")?;
    crate::fsutil::private_dir(&aside)?;
    let mut moved = Vec::new();
    let mut take = |from: std::path::PathBuf, name: String| -> anyhow::Result<()> {
        std::fs::rename(&from, aside.join(&name))
            .with_context(|| format!("moving {} into {}", from.display(), aside.display()))?;
        moved.push(name);
        Ok(())
    };
    for name in std::fs::read_dir(state_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        let ours = name == "deployment.json"
            || name == "web"
            || name.starts_with("anvil-state.json")
            || name.starts_with("share-node-");
        if ours {
            take(state_dir.join(&name), name)?;
        }
    }
    if chain_state.parent() != Some(state_dir) {
        for f in [
            chain_state.to_owned(),
            chain_state.with_extension("json.good"),
            crate::stack::journal_path(chain_state),
        ] {
            if f.exists() {
                let name = f.file_name().map_or_else(
                    || "anvil-state".into(),
                    |n| n.to_string_lossy().into_owned(),
                );
                take(f, name)?;
            }
        }
    }
    if moved.is_empty() {
        let _ = std::fs::remove_dir(&aside);
        println!("[dev] --reset: nothing to move aside");
    } else {
        println!(
            "[dev] --reset: moved {} into {} (delete it when you no longer need it)",
            moved.join(", "),
            aside.display()
        );
    }
    Ok(())
}

/// Five share nodes, each its own `ehr share-node` process with its own key and store under
/// the state folder, kept running by the supervisor.
async fn start_share_nodes(
    a: &DevArgs,
    settings: &AnvilSettings,
    chain: &EhrChain,
    supervisor: &mut Supervisor,
) -> anyhow::Result<Vec<ShareNodeRef>> {
    let exe = std::env::current_exe().context("finding the ehr binary")?;
    let mut refs = Vec::new();
    for i in 0..5u16 {
        let dir = a.state_dir.join(format!("share-node-{}", i + 1));
        crate::fsutil::private_dir(&dir)?;
        let identity = node_identity(&dir)?;
        let port = a.share_node_base_port + i;
        let spawn = {
            let (exe, dir, rpc) = (exe.clone(), dir.clone(), settings.rpc_url());
            let contract = chain.address().to_string();
            move || {
                let mut cmd = tokio::process::Command::new(&exe);
                cmd.args(["share-node", "--port", &port.to_string(), "--rpc-url", &rpc])
                    .args(["--contract", &contract])
                    .arg("--data-dir")
                    .arg(&dir);
                let name = format!("share-node-{}", i + 1);
                async move {
                    let mut child = ManagedChild::spawn(&name, cmd, true)?;
                    let url = format!("http://127.0.0.1:{port}/health");
                    let http = crate::tls::client();
                    child
                        .wait_healthy(Duration::from_secs(30), || {
                            let (http, url) = (http.clone(), url.clone());
                            async move {
                                matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
                            }
                        })
                        .await?;
                    Ok(child)
                }
            }
        };
        let start = spawn.clone();
        let first = start().await.with_context(|| {
            format!(
                "share node {} on port {port} (its folder {} may belong to a lost chain: `ehr dev --reset` starts over)",
                i + 1,
                dir.display()
            )
        })?;
        supervisor.keep(&format!("share-node-{}", i + 1), first, spawn);
        refs.push(ShareNodeRef {
            url: format!("http://127.0.0.1:{port}"),
            address: identity.address(),
        });
    }
    Ok(refs)
}

/// The ingestion service: the demo ingestor account, allowed by the office on first start, and
/// its sealer.
async fn start_ingest(
    a: &DevArgs,
    settings: &AnvilSettings,
    office: &EhrChain,
    db: &crate::db::Database,
    ipfs: &KuboClient,
    records: &RecordsConfig,
) -> anyhow::Result<crate::ingest::Ingest> {
    let key = demo_signer(settings, INGESTOR)?;
    if !office.is_ingestor(key.address()).await? {
        office.set_ingestor(key.address(), true).await?;
        println!("[dev] allowed ingestion service {}", key.address());
    }
    let ingest = crate::ingest::Ingest::new(
        db.clone(),
        office.clone(),
        crate::ingest::at_rest_key(&key.to_bytes().0),
        crate::ingest::IngestSettings {
            window: Duration::from_secs(a.ingest_window_secs),
            max_observations: a.ingest_max_observations,
            ..Default::default()
        },
    );
    let client = records.client(
        office.with_signer(&settings.rpc_url(), key.clone())?,
        key,
        ipfs.clone(),
    )?;
    crate::ingest::Sealer::new(db.clone(), client, &ingest).spawn();
    println!(
        "[dev] device readings: POST /ingest, sealed every {} s or {} observations",
        a.ingest_window_secs, a.ingest_max_observations
    );
    Ok(ingest)
}

async fn deploy_or_reuse(
    settings: &AnvilSettings,
    file: &std::path::Path,
    durable: &crate::stack::AnvilState,
) -> anyhow::Result<EhrChain> {
    let office = demo_signer(settings, OFFICE)?;
    let rpc = settings.rpc_url();
    if let Ok(d) = Deployment::load(file) {
        return match EhrChain::connect(&rpc, Some(office.clone()), &d).await {
            Ok(chain) => {
                println!(
                    "[dev] reusing contract {} from {}",
                    d.address,
                    file.display()
                );
                Ok(chain)
            }
            Err(e) => Err(anyhow::anyhow!(
                "{} names contract {} (deployment {}), but the chain at {rpc} does not have it: {e}. \
                 The chain state it lived in is gone, so its records cannot be read any more; refusing \
                 to deploy over that data. `ehr dev --reset` (or `scripts/dev --reset`) moves it aside \
                 and starts a fresh chain.",
                file.display(),
                d.address,
                d.deployment_id
            )),
        };
    }
    if let Some(dir) = file.parent() {
        let leftovers: Vec<String> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == "web" || n.starts_with("share-node-"))
            .collect();
        anyhow::ensure!(
            leftovers.is_empty(),
            "{} has no deployment file but holds data of an earlier chain ({}); refusing to deploy \
             a new contract over it. `ehr dev --reset` moves it aside and starts fresh.",
            dir.display(),
            leftovers.join(", ")
        );
    }
    let (chain, d) = EhrChain::deploy(&rpc, office.clone(), office.address()).await?;
    // On disk before its file names it: a replayed deployment would be another one.
    durable
        .journaled_after(std::time::Instant::now())
        .await
        .map_err(|e| anyhow::anyhow!("saving the chain with the new contract: {e}"))?;
    d.save(file)
        .with_context(|| format!("writing {}", file.display()))?;
    println!(
        "[dev] deployed EhrAccess at {} (block {})",
        d.address, d.block
    );
    Ok(chain)
}

/// Demo data: a records office, three doctors (two verified, one waiting), three patients with
/// grants in different states. Idempotent: skipped when the first patient is registered.
async fn seed_demo(settings: &AnvilSettings, chain: &EhrChain) -> anyhow::Result<Keyring> {
    let rpc = settings.rpc_url();
    let mut keyring = Keyring::default();
    let office = demo_signer(settings, OFFICE)?;
    keyring.insert("demo-office", office.clone());
    let doctors: Vec<_> = DOCTORS
        .iter()
        .map(|i| demo_signer(settings, *i))
        .collect::<Result<_, _>>()?;
    let patients: Vec<_> = PATIENTS
        .iter()
        .map(|(i, aid, pid)| Ok((demo_signer(settings, *i)?, PatientAddr::new(*aid, *pid)?)))
        .collect::<anyhow::Result<_>>()?;
    for (n, d) in doctors.iter().enumerate() {
        keyring.insert(&format!("demo-doctor{}", n + 1), d.clone());
    }
    for (n, (p, _)) in patients.iter().enumerate() {
        keyring.insert(&format!("demo-patient{}", n + 1), p.clone());
    }
    let as_ = |s: &PrivateKeySigner| chain.with_signer(&rpc, s.clone());
    if chain.patient_of(patients[0].0.address()).await?.is_none() {
        println!("[dev] seeding demo accounts");
        for d in &doctors {
            as_(d)?.register_provider().await?;
        }
        let office_chain = as_(&office)?;
        office_chain.verify_provider(doctors[0].address()).await?;
        office_chain.verify_provider(doctors[1].address()).await?;
        for (p, addr) in &patients {
            office_chain.issue_patient(*addr, p.address()).await?;
        }
        let now = chain.chain_time().await?;
        // Patient 1: doctor 1 open-ended; doctor 2 for a week.
        as_(&patients[0].0)?
            .grant(doctors[0].address(), None)
            .await?;
        as_(&patients[0].0)?
            .grant(doctors[1].address(), Some(now + 7 * 86_400))
            .await?;
        // Patient 2: doctor 1 granted then revoked; doctor 2 asks and waits.
        as_(&patients[1].0)?
            .grant(doctors[0].address(), None)
            .await?;
        as_(&patients[1].0)?.revoke(doctors[0].address()).await?;
        as_(&doctors[1])?.request_access(patients[1].1).await?;
        // Patient 3: doctor 2 for one hour.
        as_(&patients[2].0)?
            .grant(doctors[1].address(), Some(now + 3600))
            .await?;
    }
    println!("[dev] demo accounts (API token -> account):");
    println!("  demo-office    records office  {}", office.address());
    for (n, d) in doctors.iter().enumerate() {
        let note = if n < 2 {
            "verified"
        } else {
            "awaiting verification"
        };
        println!("  demo-doctor{}   doctor ({note}) {}", n + 1, d.address());
    }
    for (n, (p, addr)) in patients.iter().enumerate() {
        println!("  demo-patient{}  patient {addr}  {}", n + 1, p.address());
    }
    Ok(keyring)
}

/// The demo web users (the same keys as the API tokens), created once in `store` with
/// printed passwords. Development only: the passwords are public.
async fn seed_web_users(
    settings: &AnvilSettings,
    store: AccountStore,
) -> anyhow::Result<AccountStore> {
    let mut users = vec![("office".to_owned(), OFFICE, Role::Office, None)];
    for (n, i) in DOCTORS.iter().enumerate() {
        users.push((format!("doctor{}", n + 1), *i, Role::Provider, None));
    }
    for (n, (i, aid, pid)) in PATIENTS.iter().enumerate() {
        let addr = PatientAddr::new(*aid, *pid)?;
        users.push((format!("patient{}", n + 1), *i, Role::Patient, Some(addr)));
    }
    println!("[dev] demo web users (user / password):");
    for (name, index, role, patient) in users {
        if !store.exists(&name).await? {
            let key = demo_signer(settings, index)?;
            store
                .create(&name, &demo_password(&name), role, patient, Some(key))
                .await?;
            if role == Role::Provider {
                // Synthetic people for the demo; no real names or licences.
                let n = name.trim_start_matches("doctor");
                store
                    .set_profile(
                        &name,
                        crate::web::ProviderProfile::new(
                            &format!("Dr. Demo {n}"),
                            "Demo General Hospital",
                            &format!("DEMO-{n:0>4}"),
                        )?,
                    )
                    .await?;
            }
        }
        let what = patient.map_or_else(
            || format!("{role:?}").to_lowercase(),
            |p| format!("patient {p}"),
        );
        println!("  {name:<9} {:<18} {what}", demo_password(&name));
    }
    Ok(store)
}

/// Stores the demo FHIR bundle for the first patient once (client-side encryption, shares,
/// anchor: the same path as every upload).
async fn seed_demo_record(
    settings: &AnvilSettings,
    chain: &EhrChain,
    ipfs: &KuboClient,
    records: &RecordsConfig,
) -> anyhow::Result<()> {
    let (index, aid, pid) = PATIENTS[0];
    let addr = PatientAddr::new(aid, pid)?;
    let dir = records.directory(chain.clone(), crate::tls::client());
    // One page per node is enough to know: the patient may have many records.
    if !dir.list_pages(addr, 1).await?.is_empty() {
        return Ok(());
    }
    let patient = demo_signer(settings, index)?;
    let client = RecordsConfig::new(records.nodes.clone(), records.threshold).client(
        chain.with_signer(&settings.rpc_url(), patient.clone())?,
        patient,
        ipfs.clone(),
    )?;
    let id = client
        .put(
            addr,
            bytes::Bytes::from_static(DEMO_RECORD),
            FHIR_JSON,
            Some("visit-2026-11-20.fhir.json".into()),
        )
        .await?;
    println!("[dev] stored the demo record {id} for patient {addr}");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The share node's identity key, created on first start in `dir/node.key` (mode 0600).
///
/// # Errors
/// When the file cannot be read or written.
pub(crate) fn node_identity(dir: &std::path::Path) -> anyhow::Result<PrivateKeySigner> {
    node_identity_at(&dir.join("node.key"))
}

/// The share node's identity key in `path`, created (mode 0600) when missing.
///
/// # Errors
/// When the file cannot be read or written.
pub(crate) fn node_identity_at(path: &std::path::Path) -> anyhow::Result<PrivateKeySigner> {
    let path = path.to_owned();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsutil::private_dir(parent)?;
    }
    if let Ok(hex) = std::fs::read_to_string(&path) {
        return hex
            .trim()
            .parse()
            .with_context(|| format!("{} is not a private key", path.display()));
    }
    let signer = PrivateKeySigner::random();
    crate::fsutil::write_private(&path, hex::encode(signer.to_bytes()).as_bytes())?;
    Ok(signer)
}
