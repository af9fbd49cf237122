//! Private files and folders: everything the product keeps on disk that is secret or personal
//! (keys, keystores, share stores, the gateway's data) is mode 0600 in a 0700 folder, created
//! that way from the start (no window in which another user could open it).

use std::io::Write;
use std::path::Path;

/// Creates `dir` (and parents) and makes it 0700.
///
/// # Errors
/// When the folder cannot be created or its mode set.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Creates `path` empty with mode 0600 if missing; makes an existing file 0600.
///
/// # Errors
/// When the file cannot be created or its mode set.
pub fn touch_private(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        private_dir(parent)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)?;
    set_mode(path, 0o600)
}

/// Writes `bytes` to `path` atomically (a 0600 temp file renamed into place).
///
/// # Errors
/// When the file cannot be written.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp{}",
        std::process::id() ^ (rand_core::RngCore::next_u32(&mut rand_core::OsRng))
    ));
    {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}
