//! Contract subcommands: deploy, and one subcommand per operation of each role.

use alloy::primitives::Address;
use anyhow::Context;
use clap::{Args, Subcommand};

use super::ChainArgs;
use super::keys::KeyArgs;
use crate::chain::{Deployment, EhrChain, EmergencyReason, PatientAddr, RecordId, TxOutcome};

/// `ehr deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// ChainArgs flags.
    #[command(flatten)]
    chain: ChainArgs,
    /// KeyArgs flags.
    #[command(flatten)]
    key: KeyArgs,
    /// The records office account. Default: the deployer.
    #[arg(long, env = "EHR_MANAGER")]
    manager: Option<Address>,
}

/// Keys and chain, shared by every operation.
#[derive(Debug, Args)]
pub struct Common {
    /// ChainArgs flags.
    #[command(flatten)]
    chain: ChainArgs,
    /// KeyArgs flags.
    #[command(flatten)]
    key: KeyArgs,
}

/// Paging of list commands.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Skip this many entries.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// At most this many entries (max 200).
    #[arg(long, default_value_t = 50)]
    limit: u64,
}

/// Patient subcommands.
#[derive(Debug, Subcommand)]
pub enum PatientCmd {
    /// Register the signer as the patient at ADDR (AID-PID), with the voucher the records office
    /// signed for this account (`ehr office voucher`).
    Register {
        /// Patient address.
        addr: PatientAddr,
        /// The voucher's deadline (unix seconds), as `ehr office voucher` printed it.
        #[arg(long)]
        deadline: u64,
        /// The voucher's signature (0x hex), as `ehr office voucher` printed it.
        #[arg(long)]
        voucher: alloy::primitives::Bytes,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// End a provider's open break-glass access now.
    EndEmergency {
        /// Provider account.
        provider: Address,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Grant a provider access, until a unix time or open-ended.
    Grant {
        /// Provider account.
        provider: Address,
        /// Expiry in unix seconds.
        #[arg(long, conflicts_with = "for_secs")]
        until: Option<u64>,
        /// Expiry as seconds from now (chain time).
        #[arg(long)]
        for_secs: Option<u64>,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Revoke a provider's access.
    Revoke {
        /// Provider account.
        provider: Address,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Approve a pending request (grants access).
    Approve {
        /// Provider account.
        provider: Address,
        /// Expiry in unix seconds; open-ended when absent.
        #[arg(long)]
        until: Option<u64>,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Decline a pending request.
    Decline {
        /// Provider account.
        provider: Address,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// List grants of the patient at ADDR.
    Grants {
        /// Patient address.
        addr: PatientAddr,
        /// ChainArgs flags.
        #[command(flatten)]
        chain: ChainArgs,
        /// PageArgs flags.
        #[command(flatten)]
        page: PageArgs,
    },
    /// List pending requests to the patient at ADDR.
    Requests {
        /// Patient address.
        addr: PatientAddr,
        /// ChainArgs flags.
        #[command(flatten)]
        chain: ChainArgs,
        /// PageArgs flags.
        #[command(flatten)]
        page: PageArgs,
    },
    /// The audit trail of the patient at ADDR, newest first.
    Audit {
        /// Patient address.
        addr: PatientAddr,
        /// ChainArgs flags.
        #[command(flatten)]
        chain: ChainArgs,
        /// PageArgs flags.
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Provider subcommands.
#[derive(Debug, Subcommand)]
pub enum ProviderCmd {
    /// Register the signer as a provider (then wait for the records office).
    Register {
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Ask the patient at ADDR for access.
    Request {
        /// Patient address.
        addr: PatientAddr,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// The access transaction for records (denials are reported, and logged on chain).
    Access {
        /// The patient whose records are read (aid-pid).
        #[arg(long)]
        patient: PatientAddr,
        /// Record ids.
        #[arg(required = true)]
        records: Vec<RecordId>,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Open emergency access to the patient at ADDR.
    BreakGlass {
        /// Patient address.
        addr: PatientAddr,
        /// Reason (HL7 v3 PurposeOfUse): ETREAT, BTG, ERTREAT, DISASTER or THREAT.
        #[arg(long)]
        reason: EmergencyReason,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Status and denied-attempt count of a provider.
    Status {
        /// Provider account.
        provider: Address,
        /// ChainArgs flags.
        #[command(flatten)]
        chain: ChainArgs,
    },
}

/// Records office subcommands.
#[derive(Debug, Subcommand)]
pub enum OfficeCmd {
    /// Issue a patient address to an account (an office transaction).
    IssuePatient {
        /// Patient address (AID-PID).
        addr: PatientAddr,
        /// The patient's account.
        account: Address,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Sign a voucher (no transaction) with which ACCOUNT can claim ADDR itself
    /// (`ehr patient register --deadline .. --voucher ..`).
    Voucher {
        /// Patient address (AID-PID).
        addr: PatientAddr,
        /// The patient's account.
        account: Address,
        /// How long the voucher stays valid, in seconds. Default: 7 days.
        #[arg(long, default_value_t = 7 * 86_400)]
        valid_secs: u64,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Allow (or with --stop, stop) an ingestion service: the account a gateway seals
    /// devices' readings with (`[ingest] key_file` of `ehr serve`).
    SetIngestor {
        /// The service's account.
        ingestor: Address,
        /// Stop it instead.
        #[arg(long)]
        stop: bool,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Verify a provider.
    Verify {
        /// Provider account.
        provider: Address,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Suspend a provider.
    Suspend {
        /// Provider account.
        provider: Address,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Nominate a new records office account.
    Transfer {
        /// The nominee.
        nominee: Address,
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Accept the records office role (as the nominee).
    Accept {
        /// Common flags.
        #[command(flatten)]
        c: Common,
    },
    /// Every contract event, newest first.
    Audit {
        /// ChainArgs flags.
        #[command(flatten)]
        chain: ChainArgs,
        /// PageArgs flags.
        #[command(flatten)]
        page: PageArgs,
    },
}

pub(crate) fn deployment(chain: &ChainArgs) -> anyhow::Result<Deployment> {
    if let Some(address) = chain.contract {
        return Ok(Deployment {
            chain_id: 0,
            address,
            block: 0,
            deployment_id: alloy::primitives::B256::ZERO,
            version: 0,
        });
    }
    Deployment::load(&chain.deployment).with_context(|| {
        format!(
            "no deployment at {} (run `ehr deploy`, or set --contract/EHR_CONTRACT)",
            chain.deployment.display()
        )
    })
}

async fn signing(c: &Common) -> anyhow::Result<EhrChain> {
    let signer = c.key.signer()?;
    Ok(EhrChain::connect(&c.chain.rpc_url, Some(signer), &deployment(&c.chain)?).await?)
}

async fn reading(chain: &ChainArgs) -> anyhow::Result<EhrChain> {
    Ok(EhrChain::connect(&chain.rpc_url, None, &deployment(chain)?).await?)
}

fn print_tx(what: &str, o: &TxOutcome) {
    println!(
        "{what}: tx {} (block {}, gas {})",
        o.tx_hash, o.block, o.gas_used
    );
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `ehr deploy`.
///
/// # Errors
/// When the key, chain or deployment fails.
pub async fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let signer = a.key.signer()?;
    let manager = a.manager.unwrap_or(signer.address());
    let (_, d) = EhrChain::deploy(&a.chain.rpc_url, signer, manager).await?;
    d.save(&a.chain.deployment)
        .with_context(|| format!("writing {}", a.chain.deployment.display()))?;
    println!(
        "deployed EhrAccess at {} on chain {} (block {}); records office {manager}; wrote {}",
        d.address,
        d.chain_id,
        d.block,
        a.chain.deployment.display()
    );
    Ok(())
}

/// `ehr patient ...`.
///
/// # Errors
/// Contract rejections in words, transport and key errors.
pub async fn patient(cmd: PatientCmd) -> anyhow::Result<()> {
    match cmd {
        PatientCmd::Register {
            addr,
            deadline,
            voucher,
            c,
        } => print_tx(
            &format!("registered patient {addr}"),
            &signing(&c)
                .await?
                .register_patient(addr, deadline, voucher)
                .await?,
        ),
        PatientCmd::EndEmergency { provider, c } => print_tx(
            &format!("ended the emergency access of {provider}"),
            &signing(&c).await?.end_emergency(provider).await?,
        ),
        PatientCmd::Grant {
            provider,
            until,
            for_secs,
            c,
        } => {
            let chain = signing(&c).await?;
            let until = match for_secs {
                Some(s) => Some(chain.chain_time().await? + s),
                None => until,
            };
            print_tx(
                &format!("granted {provider}"),
                &chain.grant(provider, until).await?,
            );
        }
        PatientCmd::Revoke { provider, c } => print_tx(
            &format!("revoked {provider}"),
            &signing(&c).await?.revoke(provider).await?,
        ),
        PatientCmd::Approve { provider, until, c } => print_tx(
            &format!("approved {provider}"),
            &signing(&c).await?.approve_request(provider, until).await?,
        ),
        PatientCmd::Decline { provider, c } => print_tx(
            &format!("declined {provider}"),
            &signing(&c).await?.decline_request(provider).await?,
        ),
        PatientCmd::Grants { addr, chain, page } => print_json(
            &reading(&chain)
                .await?
                .grants(addr, page.offset, page.limit)
                .await?,
        )?,
        PatientCmd::Requests { addr, chain, page } => print_json(
            &reading(&chain)
                .await?
                .pending_requests(addr, page.offset, page.limit)
                .await?,
        )?,
        PatientCmd::Audit { addr, chain, page } => print_json(
            &reading(&chain)
                .await?
                .audit_for_patient(addr, page.offset as usize, page.limit as usize)
                .await?,
        )?,
    }
    Ok(())
}

/// `ehr provider ...`.
///
/// # Errors
/// Contract rejections in words, transport and key errors.
pub async fn provider(cmd: ProviderCmd) -> anyhow::Result<()> {
    match cmd {
        ProviderCmd::Register { c } => print_tx(
            "registered as provider (pending verification)",
            &signing(&c).await?.register_provider().await?,
        ),
        ProviderCmd::Request { addr, c } => print_tx(
            &format!("requested access to {addr}"),
            &signing(&c).await?.request_access(addr).await?,
        ),
        ProviderCmd::Access {
            patient,
            records,
            c,
        } => {
            let o = signing(&c).await?.access(patient, &records).await?;
            print_tx("access transaction", &o.tx);
            for r in &o.allowed {
                println!("  allowed {r}");
            }
            for (r, why) in &o.denied {
                println!("  DENIED  {r}: {why}");
            }
        }
        ProviderCmd::BreakGlass { addr, reason, c } => print_tx(
            &format!("BREAK-GLASS opened on {addr} (reason {reason}); the patient will see it"),
            &signing(&c).await?.break_glass(addr, reason).await?,
        ),
        ProviderCmd::Status { provider, chain } => {
            let (status, denied) = reading(&chain).await?.provider_status(provider).await?;
            print_json(
                &serde_json::json!({"provider": provider, "status": status, "denied_count": denied}),
            )?;
        }
    }
    Ok(())
}

/// `ehr office ...`.
///
/// # Errors
/// Contract rejections in words, transport and key errors.
pub async fn office(cmd: OfficeCmd) -> anyhow::Result<()> {
    match cmd {
        OfficeCmd::IssuePatient { addr, account, c } => print_tx(
            &format!("issued patient {addr} to {account}"),
            &signing(&c).await?.issue_patient(addr, account).await?,
        ),
        OfficeCmd::Voucher {
            addr,
            account,
            valid_secs,
            c,
        } => {
            let chain = signing(&c).await?;
            chain.check_issuable(account).await?;
            let deadline = chain.chain_time().await? + valid_secs;
            let sig =
                crate::chain::sign_voucher(&c.key.signer()?, &chain, addr, account, deadline)?;
            print_json(&serde_json::json!({
                "addr": addr, "account": account, "deadline": deadline, "voucher": sig,
            }))?;
        }
        OfficeCmd::SetIngestor { ingestor, stop, c } => print_tx(
            &format!(
                "{} ingestion service {ingestor}",
                if stop { "stopped" } else { "allowed" }
            ),
            &signing(&c).await?.set_ingestor(ingestor, !stop).await?,
        ),
        OfficeCmd::Verify { provider, c } => print_tx(
            &format!("verified {provider}"),
            &signing(&c).await?.verify_provider(provider).await?,
        ),
        OfficeCmd::Suspend { provider, c } => print_tx(
            &format!("suspended {provider}"),
            &signing(&c).await?.suspend_provider(provider).await?,
        ),
        OfficeCmd::Transfer { nominee, c } => print_tx(
            &format!("nominated {nominee}"),
            &signing(&c).await?.transfer_manager(nominee).await?,
        ),
        OfficeCmd::Accept { c } => print_tx(
            "accepted the records office role",
            &signing(&c).await?.accept_manager().await?,
        ),
        OfficeCmd::Audit { chain, page } => print_json(
            &reading(&chain)
                .await?
                .audit_all(page.offset as usize, page.limit as usize)
                .await?,
        )?,
    }
    Ok(())
}
