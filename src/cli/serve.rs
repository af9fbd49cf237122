//! `ehr serve`: the gateway and web application for a real deployment, from a configuration
//! file (`ehr.example.toml`), with no demo tokens, no development keys and no faucet.
//! `ehr serve --check` validates the file and reports what it can reach.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::chain::{Deployment, EhrChain};
use crate::db::EventStore;
use crate::gateway::{AppState, Keyring, RecordsConfig};
use crate::records::ShareNodeRef;
use crate::serve_config::{ServeConfig, ServeConfigError};
use crate::web::{AccountStore, TokenStore, WebState};

/// `ehr serve` flags. Every configuration key also comes from its `EHR_*` variable (see
/// ehr.example.toml), which wins over the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (see ehr.example.toml). Default: ehr.toml when it exists;
    /// without a file the `EHR_*` environment alone configures the server.
    #[arg(long, env = "EHR_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, report what is reachable, and exit (0: all reachable,
    /// 1: invalid configuration, 2: something unreachable or not what the file says).
    #[arg(long)]
    check: bool,
    /// Overrides `listen` (and EHR_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Import the web users, keystores and API tokens an earlier version kept as files in this
    /// folder (its former `web.data_dir`) into the configured database, then exit. The files
    /// are kept, renamed `*.imported`.
    #[arg(long, value_name = "DIR")]
    import_web_dir: Option<PathBuf>,
}

impl ServeArgs {
    fn file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let default = PathBuf::from("ehr.toml");
            default.exists().then_some(default)
        })
    }

    fn load(&self) -> Result<ServeConfig, ServeConfigError> {
        let mut c = ServeConfig::load(self.file().as_deref())?;
        if let Some(v) = &self.listen {
            c.listen.clone_from(v);
        }
        c.check()?;
        crate::chain::set_rpc_deadline(std::time::Duration::from_secs(c.chain.rpc_timeout_secs));
        Ok(c)
    }
}

/// What `ehr serve` found at start.
struct Reach {
    deployment: Deployment,
    chain: Result<EhrChain, crate::chain::ChainError>,
    ipfs_ok: bool,
    nodes_ok: bool,
    /// Nodes that answered as another identity than the configured one.
    impostors: Vec<String>,
}

async fn reach(c: &ServeConfig) -> anyhow::Result<Reach> {
    if let Some(ca) = &c.records.share_node_ca {
        let n = crate::share_node::tls::trust_pem(ca)
            .context("`records.share_node_ca` must be a PEM file of CA certificates")?;
        println!(
            "tls     ok      {n} CA certificate(s) for share nodes from {}",
            ca.display()
        );
    }
    let deployment = match (&c.chain.deployment, c.chain.contract) {
        (Some(file), _) => Deployment::load(file).with_context(|| {
            format!(
                "`chain.deployment`: cannot read {} (the file `ehr deploy` wrote)",
                file.display()
            )
        })?,
        (None, Some(address)) => Deployment {
            chain_id: 0,
            address,
            block: 0,
            deployment_id: alloy::primitives::B256::ZERO,
            version: 0,
        },
        (None, None) => anyhow::bail!("`chain.deployment` or `chain.contract` must be set"),
    };
    let chain = EhrChain::connect(&c.chain.rpc_url, None, &deployment)
        .await
        .map(|ch| ch.with_confirmations(c.chain.confirmations));
    match &chain {
        Ok(chain) => println!(
            "chain   ok      {} chain id {}, EhrAccess v{} at {}, deployment {}",
            c.chain.rpc_url,
            chain.chain_id(),
            crate::chain::CONTRACT_VERSION,
            chain.address(),
            chain.deployment_id()
        ),
        Err(e) => println!(
            "chain   FAILED  {}: {}",
            c.chain.rpc_url,
            crate::kind::with_sources(e)
        ),
    }
    let mut ipfs_up = 0;
    for peer in c.ipfs.clients()? {
        match peer.version().await {
            Ok(v) => {
                println!("ipfs    ok      {} Kubo {}", peer.base_url(), v.version);
                ipfs_up += 1;
            }
            Err(e) => println!("ipfs    FAILED  {}: {e}", peer.base_url()),
        }
    }
    let ipfs_ok = ipfs_up >= c.ipfs.replication();
    if c.ipfs.peers.is_empty() {
        println!("ipfs    one peer, one copy of each record");
    } else {
        println!(
            "ipfs    {} copies of each record over {} peers ({ipfs_up} up)",
            c.ipfs.replication(),
            1 + c.ipfs.peers.len()
        );
    }
    let mut nodes_ok = true;
    let mut impostors = Vec::new();
    for n in &c.records.share_nodes {
        match ShareNodeRef::discover(&n.url).await {
            Ok(found) if found.address == n.address => {
                println!("share   ok      {} node {}", n.url, n.address);
            }
            Ok(found) => {
                nodes_ok = false;
                println!(
                    "share   WRONG   {} answers as node {}, the config says {} (`records.share_nodes.address`)",
                    n.url, found.address, n.address
                );
                impostors.push(format!(
                    "share node {} answers as {}, not {}",
                    n.url, found.address, n.address
                ));
            }
            Err(e) => {
                nodes_ok = false;
                println!("share   FAILED  {}: {e}", n.url);
            }
        }
    }
    Ok(Reach {
        deployment,
        chain,
        ipfs_ok,
        nodes_ok,
        impostors,
    })
}

async fn tls_config(
    c: &ServeConfig,
) -> anyhow::Result<Option<axum_server::tls_rustls::RustlsConfig>> {
    let Some(t) = &c.tls else { return Ok(None) };
    // Several crypto providers are linked in (through dependencies); pick one for rustls.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cfg = axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert, &t.key)
        .await
        .with_context(|| {
            format!(
                "`tls.cert` / `tls.key`: cannot load {} and {} as PEM certificate and key",
                t.cert.display(),
                t.key.display()
            )
        })?;
    println!("tls     ok      {} / {}", t.cert.display(), t.key.display());
    Ok(Some(cfg))
}

/// Runs `ehr serve`.
///
/// # Errors
/// An invalid configuration (naming the key and the fix), a wrong share-node identity, a busy
/// port.
pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    let source = a.file().map_or_else(
        || "(EHR_* environment)".to_owned(),
        |p| p.display().to_string(),
    );
    let c = a
        .load()
        .with_context(|| format!("configuration {source}"))?;
    println!("config  ok      {source}");
    for (old, now) in [
        ("EHR_RPC_URL", "EHR_CHAIN_RPC_URL"),
        ("EHR_IPFS_API", "EHR_IPFS_API_URL"),
        ("EHR_WEB_DIR", "[database] url / EHR_DATABASE_URL"),
    ] {
        if std::env::var_os(old).is_some() {
            println!("config  WARNING {old} is set but no longer read by ehr serve; use {now}");
        }
    }
    let tls = tls_config(&c).await?;
    let r = reach(&c).await?;
    let db = crate::db::Database::open(&c.database.url).await;
    match &db {
        Ok(db) => println!("db      ok      {} ({})", db.url(), db.backend()),
        Err(e) => println!("db      FAILED  {e}"),
    }
    if let Some(dir) = &a.import_web_dir {
        let db = db.context("`database.url` (or EHR_DATABASE_URL)")?;
        let accounts = AccountStore::new(db).await?;
        let r = crate::web::import_web_dir(dir, &accounts)
            .await
            .with_context(|| format!("importing {}", dir.display()))?;
        println!(
            "imported {} users and {} API tokens from {}",
            r.users,
            r.tokens,
            dir.display()
        );
        if !r.skipped.is_empty() {
            for s in &r.skipped {
                println!("NOT imported: {s}");
            }
            anyhow::bail!(
                "{} users not imported; the folders stay as they are: fix them and run again",
                r.skipped.len()
            );
        }
        return Ok(());
    }
    if a.check {
        if r.chain.is_ok() && r.ipfs_ok && r.nodes_ok && db.is_ok() {
            println!("everything is reachable");
            return Ok(());
        }
        println!("some parts are not reachable or not what the configuration says");
        std::process::exit(2);
    }
    // Accounts, sessions and tokens live in the database: without it nobody can log in.
    let db = db.context("`database.url` (or EHR_DATABASE_URL)")?;
    // A contract that is not the configured one is a configuration mistake, never served; a
    // chain that does not answer yet is waited for (`/health` says so meanwhile).
    let chain = match r.chain {
        Ok(chain) => Some(chain),
        Err(e @ crate::chain::ChainError::Rpc(_)) => {
            tracing::warn!(
                "{}; serving /health and retrying the chain every 5 s",
                crate::kind::with_sources(&e)
            );
            None
        }
        Err(e) => return Err(e).context("`chain` (see above); not serving"),
    };
    let loopback = c
        .listen
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if tls.is_none() && !loopback && !c.web.secure_cookies {
        tracing::warn!(
            "listening on {} over plain HTTP without secure_cookies: passwords and sessions travel in clear; add [tls] or put a TLS proxy in front and set web.secure_cookies",
            c.listen
        );
    }
    // An unreachable node may come up later; one that answers as another node is either a
    // mistake or an impersonation, and shares must never go to it.
    anyhow::ensure!(
        r.impostors.is_empty(),
        "{}: fix `records.share_nodes.address`",
        r.impostors.join("; ")
    );
    // The chain client once connected (now, or later when the node comes up).
    let later_chain: std::sync::Arc<std::sync::OnceLock<crate::chain::EhrChain>> =
        Default::default();
    if let Some(ch) = &chain {
        let _ = later_chain.set(ch.clone());
    }
    let mut records = RecordsConfig::new(
        c.records
            .share_nodes
            .iter()
            .map(|n| ShareNodeRef {
                url: n.url.trim_end_matches('/').to_owned(),
                address: n.address,
            })
            .collect(),
        c.records.threshold,
    )
    .with_access_reuse(std::time::Duration::from_secs(c.records.access_reuse_secs))
    .with_padding(c.records.padding.scheme());
    records.anchoring = match &c.records.batch_key_file {
        Some(path) => {
            let hex = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "records.batch_key_file: cannot read {} (a hex private key of a funded account)",
                        path.display()
                    )
                })?;
            let key: alloy::signers::local::PrivateKeySigner =
                hex.trim().parse().with_context(|| {
                    format!(
                        "records.batch_key_file: {} is not a private key",
                        path.display()
                    )
                })?;
            tracing::info!(
                "anchoring uploads in batches as {} (window {} ms)",
                key.address(),
                c.records.batch_window_ms
            );
            // The chain may come up after the gateway: each batch asks for it.
            let rpc = c.chain.rpc_url.clone();
            let connected = later_chain.clone();
            let source: crate::records::ChainSource = std::sync::Arc::new(move || {
                connected
                    .get()
                    .and_then(|ch: &crate::chain::EhrChain| ch.with_signer(&rpc, key.clone()).ok())
            });
            let batcher: std::sync::Arc<dyn crate::records::Anchoring> =
                crate::records::Batcher::spawn_with(
                    source,
                    crate::records::BatchSettings {
                        window: std::time::Duration::from_millis(c.records.batch_window_ms),
                        ..Default::default()
                    },
                );
            Some(batcher)
        }
        None => None,
    };
    records
        .sweeper(
            c.ipfs.replicas()?,
            crate::share_node::tls::http(),
            crate::records::SweepSettings::for_ttl(std::time::Duration::from_secs(
                c.records.orphan_ttl_secs,
            )),
        )
        .spawn();
    let ingest = match (&c.ingest, &chain) {
        (Some(i), Some(ch)) => Some(start_ingest(i, ch, &c, &db, &records).await?),
        (Some(_), None) => {
            tracing::warn!(
                "ingest: the chain was unreachable at start, so device readings are refused (503) until ehr serve restarts with the chain up"
            );
            None
        }
        (None, _) => None,
    };
    let events = std::sync::Arc::new(EventStore::new(db.clone()));
    let accounts = AccountStore::new(db.clone()).await?;
    let tokens = TokenStore::new(accounts.clone());
    let state = AppState::new(
        &c.chain.rpc_url,
        chain.map(|ch| ch.with_index_store(events.clone())),
        c.ipfs.replicas()?,
        Keyring::default(),
    )
    .map_err(anyhow::Error::msg)?
    .with_records(records)
    .with_database(db)
    .with_tokens(std::sync::Arc::new(tokens.clone()));
    let state = match ingest {
        Some(i) => state.with_ingest(i),
        None => state,
    };
    if state.chain().is_none() {
        tokio::spawn(connect_later(
            state.clone(),
            c.chain.rpc_url.clone(),
            r.deployment,
            c.chain.confirmations,
            events,
            later_chain,
        ));
    }
    let proxies = match &c.proxy {
        Some(p) => crate::gateway::TrustedProxies::parse(&p.trusted).map_err(anyhow::Error::msg)?,
        None => crate::gateway::TrustedProxies::default(),
    };
    let web = WebState::new(state.clone(), accounts)
        .with_tokens(tokens)
        .with_secure_cookies(c.web.secure_cookies || tls.is_some() || c.proxy.is_some());
    let app = crate::gateway::router(state)
        .merge(crate::web::router(web))
        .layer(axum::middleware::from_fn_with_state(
            proxies,
            crate::gateway::real_client,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    let addr: SocketAddr = c.listen.parse().context("`listen` must be address:port")?;
    match tls {
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                super::dev::shutdown_signal().await;
                h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
            });
            println!("ehr serve listening on https://{addr}");
            axum_server::bind_rustls(addr, tls)
                .handle(handle)
                .serve(app)
                .await
                .with_context(|| format!("serving on {addr} (`listen`)"))?;
        }
        None => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (`listen`)"))?;
            println!("ehr serve listening on http://{addr} (put a TLS proxy in front)");
            axum::serve(listener, app)
                .with_graceful_shutdown(super::dev::shutdown_signal())
                .await?;
        }
    }
    Ok(())
}

/// The ingestion service of `[ingest]`: its key, the records office's allowance checked, and
/// its sealer.
async fn start_ingest(
    i: &crate::serve_config::IngestSection,
    chain: &EhrChain,
    c: &crate::serve_config::ServeConfig,
    db: &crate::db::Database,
    records: &RecordsConfig,
) -> anyhow::Result<crate::ingest::Ingest> {
    let hex = std::fs::read_to_string(&i.key_file).with_context(|| {
        format!(
            "ingest.key_file: cannot read {} (a hex private key)",
            i.key_file.display()
        )
    })?;
    let key: alloy::signers::local::PrivateKeySigner = hex.trim().parse().with_context(|| {
        format!(
            "ingest.key_file: {} is not a private key",
            i.key_file.display()
        )
    })?;
    if !chain.is_ingestor(key.address()).await? {
        tracing::warn!(
            "ingest: {} is not allowed by the records office yet (`ehr office set-ingestor {}`): share nodes refuse its records until it is",
            key.address(),
            key.address()
        );
    }
    let ingest = crate::ingest::Ingest::new(
        db.clone(),
        chain.clone(),
        crate::ingest::at_rest_key(&key.to_bytes().0),
        crate::ingest::IngestSettings {
            window: std::time::Duration::from_secs(i.window_secs),
            max_observations: i.max_observations,
            max_skew: std::time::Duration::from_secs(i.max_skew_secs),
            ..Default::default()
        },
    );
    let client = records.client(
        chain.with_signer(&c.chain.rpc_url, key.clone())?,
        key.clone(),
        c.ipfs.replicas()?,
    )?;
    crate::ingest::Sealer::new(db.clone(), client, &ingest).spawn();
    tracing::info!(
        "taking device readings as ingestion service {} (window {} s or {} readings)",
        key.address(),
        i.window_secs,
        i.max_observations
    );
    Ok(ingest)
}

/// Retries the chain every 5 s until it answers as the configured deployment, then hands the
/// client to the running gateway.
async fn connect_later(
    state: AppState,
    rpc_url: String,
    deployment: Deployment,
    confirmations: u64,
    events: std::sync::Arc<EventStore>,
    later_chain: std::sync::Arc<std::sync::OnceLock<EhrChain>>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        match EhrChain::connect(&rpc_url, None, &deployment).await {
            Ok(chain) => {
                let chain = chain.with_confirmations(confirmations);
                tracing::info!("chain {rpc_url} answers; serving");
                let _ = later_chain.set(chain.clone());
                state.set_chain(chain.with_index_store(events));
                return;
            }
            Err(e) => tracing::warn!("chain still unreachable: {}", crate::kind::with_sources(&e)),
        }
    }
}
