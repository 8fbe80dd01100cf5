//! Paths named inside a file (ONNX external data) that must stay in the file's directory.

use std::path::{Component, Path, PathBuf};

use crate::FsError;

/// Resolves `location`, a path written inside `file`, against the directory `base` (usually
/// the file's own), and refuses every spelling that leads out of it — the rule the ONNX
/// checker applies to external data:
///
/// - an absolute path, a drive prefix or a `..` component;
/// - a path whose real location (symbolic links resolved) is not inside `base`'s real
///   location;
/// - anything but a regular file there (a FIFO, a device, a directory).
///
/// Returns the resolved path, which lies inside `base`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("model.onnx.data"), b"")?;
/// let model = dir.path().join("model.onnx");
/// assert!(fair_fs::resolve_inside(dir.path(), "model.onnx.data", &model).is_ok());
/// assert!(fair_fs::resolve_inside(dir.path(), "../etc/passwd", &model).is_err());
/// assert!(fair_fs::resolve_inside(dir.path(), "/etc/passwd", &model).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn resolve_inside(base: &Path, location: &str, file: &Path) -> Result<PathBuf, FsError> {
    let refuse = |detail: String| FsError::Outside {
        location: location.to_owned(),
        file: file.to_owned(),
        detail,
    };
    let rel = Path::new(location);
    if location.is_empty() {
        return Err(refuse(
            "is empty; expected a file name next to the model".into(),
        ));
    }
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refuse(
            "must be a relative path inside the model's directory (no absolute path, no '..')"
                .into(),
        ));
    }
    let real_base = base.canonicalize().map_err(|e| {
        refuse(format!(
            "cannot be resolved: the directory '{}' cannot be read: {e}",
            base.display()
        ))
    })?;
    let joined = base.join(rel);
    let real = joined
        .canonicalize()
        .map_err(|e| refuse(format!("cannot be read: {e}")))?;
    if !real.starts_with(&real_base) {
        return Err(refuse(format!(
            "leads outside the model's directory '{}' (through a symbolic link, to '{}')",
            base.display(),
            real.display()
        )));
    }
    crate::check_regular(&real, "a regular file of tensor data")
        .map_err(|e| refuse(e.to_string()))?;
    Ok(real)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn every_way_out_of_the_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("model");
        std::fs::create_dir_all(base.join("sub")).unwrap();
        std::fs::write(base.join("w.data"), b"1").unwrap();
        std::fs::write(root.path().join("secret"), b"2").unwrap();
        let file = base.join("m.onnx");
        let link = |name: &str, to: &Path| std::os::unix::fs::symlink(to, base.join(name)).unwrap();
        link("up", &root.path().join("secret"));
        link("etc", Path::new("/etc/passwd"));
        link("dirup", root.path());
        link("inside", &base.join("w.data"));
        link("zero", Path::new("/dev/zero"));
        assert!(resolve_inside(&base, "w.data", &file).is_ok());
        assert!(resolve_inside(&base, "./w.data", &file).is_ok());
        assert!(resolve_inside(&base, "inside", &file).is_ok());
        for (loc, says) in [
            ("../secret", "relative path"),
            ("sub/../../secret", "relative path"),
            ("/etc/passwd", "relative path"),
            ("up", "leads outside"),
            ("etc", "leads outside"),
            ("dirup/secret", "leads outside"),
            ("zero", "leads outside"),
            ("sub", "is a directory"),
            ("missing", "cannot be read"),
            ("", "is empty"),
        ] {
            let e = resolve_inside(&base, loc, &file).unwrap_err().to_string();
            assert!(e.contains(says), "{loc}: {e}");
            assert!(e.contains("m.onnx"), "{loc}: {e}");
        }
        let fifo = base.join("pipe");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = resolve_inside(&base, "pipe", &file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO"), "{e}");
    }
}
