//! Signing keys for the CLI.
//! Which key signs: a raw private key, an encrypted keystore file, or a dev account index.

use std::path::PathBuf;

use alloy::signers::local::{LocalSigner, MnemonicBuilder, PrivateKeySigner};
use anyhow::{Context, bail};
use clap::Args;

use crate::config::AnvilSettings;

/// Signing key selection; exactly one source must be given.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Hex private key (prefer a keystore outside development).
    #[arg(long, env = "EHR_PRIVATE_KEY", hide_env_values = true)]
    pub private_key: Option<String>,
    /// Encrypted Web3 keystore file (scrypt/pbkdf2); its password from --password-file.
    #[arg(long, env = "EHR_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// File holding the keystore password.
    #[arg(long, env = "EHR_KEYSTORE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Development only: account N of the mnemonic in anvil.toml.
    #[arg(long, env = "EHR_DEV_ACCOUNT")]
    pub dev_account: Option<u32>,
    /// The anvil settings file for --dev-account. Default: anvil.toml.
    #[arg(long, env = "EHR_ANVIL_CONFIG", default_value = "anvil.toml")]
    pub anvil_config: PathBuf,
}

impl KeyArgs {
    /// The signer these flags select.
    ///
    /// # Errors
    /// When none or several sources are given, or the key cannot be read.
    pub fn signer(&self) -> anyhow::Result<PrivateKeySigner> {
        let given = [
            self.private_key.is_some(),
            self.keystore.is_some(),
            self.dev_account.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => bail!(
                "no signing key: set --private-key/EHR_PRIVATE_KEY, --keystore/EHR_KEYSTORE or --dev-account/EHR_DEV_ACCOUNT"
            ),
            1 => {}
            _ => bail!("give only one of --private-key, --keystore and --dev-account"),
        }
        if let Some(k) = &self.private_key {
            return k
                .trim()
                .parse()
                .context("--private-key/EHR_PRIVATE_KEY is not a 32-byte hex key");
        }
        if let Some(path) = &self.keystore {
            let pw_file = self
                .password_file
                .as_ref()
                .context("--keystore needs --password-file/EHR_KEYSTORE_PASSWORD_FILE")?;
            let pw = std::fs::read_to_string(pw_file)
                .with_context(|| format!("reading {}", pw_file.display()))?;
            return LocalSigner::decrypt_keystore(path, pw.trim_end_matches(['\n', '\r']))
                .with_context(|| {
                    format!(
                        "cannot unlock keystore {} (wrong password?)",
                        path.display()
                    )
                });
        }
        let index = self.dev_account.unwrap_or_default();
        let settings = AnvilSettings::load(&self.anvil_config)
            .context("--dev-account needs anvil.toml (--anvil-config)")?;
        dev_signer(&settings.mnemonic, index)
    }
}

/// Account `index` of `mnemonic` on the standard path m/44'/60'/0'/0/index (as anvil derives).
///
/// # Errors
/// When the mnemonic is invalid.
pub fn dev_signer(mnemonic: &str, index: u32) -> anyhow::Result<PrivateKeySigner> {
    MnemonicBuilder::<alloy::signers::local::coins_bip39::English>::default()
        .phrase(mnemonic)
        .index(index)?
        .build()
        .context("invalid mnemonic in anvil.toml")
}
