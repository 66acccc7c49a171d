//! `jwksFile`: a JWKS read from a file. A RequestAuthentication is a tenant's
//! object and every agent compiles it, so a path in it would make every node read
//! that file (`/dev/zero` until killed, a FIFO that blocks, errors that tell which
//! files exist). A file is read only when the agent was given a JWKS directory
//! (`--jwks-dir`), only by plain name inside it, only if it is a regular file (not
//! followed through a symlink, opened non-blocking) of at most `MAX_BYTES`; the
//! refusal says the same whatever the file is.
use std::{
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The largest JWKS file read.
pub const MAX_BYTES: u64 = 64 << 10;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Lets `jwksFile` name files in `dir` (the agent's `--jwks-dir`). Without it,
/// jwksFile is refused.
pub fn allow_in(dir: PathBuf) {
    let _ = DIR.set(dir);
}

/// The JWKS directory set for this process.
pub fn dir() -> Option<&'static Path> {
    DIR.get().map(PathBuf::as_path)
}

/// Why a jwksFile is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("jwksFile is not accepted here: give the keys inline (jwks), or run the agents with --jwks-dir and name a file in it")]
    NoDirectory,
    #[error("jwksFile must be a plain file name inside the agent's --jwks-dir")]
    NotAPlainName,
    #[error(
        "jwksFile {0:?} is not a readable regular file of at most 64 KiB in the agent's --jwks-dir"
    )]
    Unreadable(String),
}

/// Reads `name` from `dir`. Pure apart from that one read.
pub fn read(dir: Option<&Path>, name: &str) -> Result<String, Refused> {
    let dir = dir.ok_or(Refused::NoDirectory)?;
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.contains('\0') {
        return Err(Refused::NotAPlainName);
    }
    let unreadable = || Refused::Unreadable(name.to_owned());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(dir.join(name))
        .map_err(|_| unreadable())?;
    let meta = f.metadata().map_err(|_| unreadable())?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(unreadable());
    }
    let mut text = String::new();
    f.take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|_| unreadable())?;
    if text.len() as u64 > MAX_BYTES {
        return Err(unreadable());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_in_the_directory_are_read() {
        let dir = std::env::temp_dir().join(format!("fm-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("keys.json"), r#"{"keys":[]}"#).expect("file");
        std::fs::write(dir.join("big.json"), vec![b' '; (MAX_BYTES + 1) as usize]).expect("big");
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).expect("symlink");
        std::os::unix::fs::symlink("/etc/hostname", dir.join("elsewhere")).expect("symlink");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        let d = Some(dir.as_path());
        assert_eq!(read(d, "keys.json").as_deref(), Ok(r#"{"keys":[]}"#));
        assert_eq!(read(None, "keys.json"), Err(Refused::NoDirectory));
        for name in ["../etc/passwd", "/dev/zero", "a/b", ".hidden", ""] {
            assert_eq!(read(d, name), Err(Refused::NotAPlainName), "{name}");
        }
        for name in ["big.json", "zero", "elsewhere", "missing"] {
            assert_eq!(
                read(d, name),
                Err(Refused::Unreadable(name.into())),
                "{name}"
            );
        }
        if made.is_ok_and(|s| s.success()) {
            // Opened non-blocking: refused at once, no writer awaited.
            assert_eq!(read(d, "fifo"), Err(Refused::Unreadable("fifo".into())));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
