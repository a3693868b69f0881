//! Finding the programs the lab runs: the Kubernetes tools (etcd, kube-apiserver,
//! kube-controller-manager, kube-proxy, kubectl, helm) and the `ferrolb-lab` binary itself,
//! which provides the API relays.
//!
//! Owns discovery only; it may run `scripts/build-tools.sh` (fast when cached) but must not
//! start any lab process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Env var naming a directory that holds the Kubernetes tools; skips build-tools.sh.
pub const TOOLS_ENV: &str = "FERROLB_TOOLS_BIN";
/// Env var naming the `ferrolb-lab` binary to use for relays.
pub const LAB_BIN_ENV: &str = "FERROLB_LAB_BIN";
/// The script that builds (or finds cached) tools and prints their directory last.
pub const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-tools.sh");
/// Tools every lab needs.
pub const CORE_TOOLS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];

/// Why a program could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    /// build-tools.sh could not run or failed.
    #[error("{script} failed ({detail}); run it by hand to see why, or set {TOOLS_ENV}")]
    Build {
        /// The script.
        script: String,
        /// Exit status or spawn error.
        detail: String,
    },
    /// A tool is missing from the tools directory.
    #[error("{tool} not found in {dir} (set {TOOLS_ENV} or run {BUILD_SCRIPT})")]
    MissingTool {
        /// The tool.
        tool: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The `ferrolb-lab` binary was not found.
    #[error(
        "the ferrolb-lab binary (needed for the API relays) is not at {0}; build it with \
         `cargo build -p ferrolb-lab` or set {LAB_BIN_ENV}"
    )]
    MissingLabBin(PathBuf),
}

/// The tools directory: `$FERROLB_TOOLS_BIN`, else the last line printed by build-tools.sh.
/// Checks that `needed` tools are present and executable.
pub fn tools_bin(needed: &[&str]) -> Result<PathBuf, ToolsError> {
    let dir = match std::env::var_os(TOOLS_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => run_build_script()?,
    };
    for tool in needed {
        if !is_executable(&dir.join(tool)) {
            return Err(ToolsError::MissingTool {
                tool: (*tool).to_string(),
                dir,
            });
        }
    }
    Ok(dir)
}

fn run_build_script() -> Result<PathBuf, ToolsError> {
    let fail = |detail: String| ToolsError::Build {
        script: BUILD_SCRIPT.to_string(),
        detail,
    };
    // Progress goes to our stderr: a first build takes a long time and should say so.
    let out = Command::new("bash")
        .arg(BUILD_SCRIPT)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(out.status.to_string()));
    }
    last_line(&String::from_utf8_lossy(&out.stdout))
        .map(PathBuf::from)
        .ok_or_else(|| fail("it printed no directory".into()))
}

/// The last non-empty line of `text`, trimmed.
pub fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// Where `ferrolb-lab` is expected next to `current_exe`: the executable itself when it is
/// `ferrolb-lab`, else the cargo profile directory (`target/debug/deps/x` -> `target/debug`).
pub fn lab_bin_candidate(current_exe: &Path) -> PathBuf {
    if current_exe.file_name().is_some_and(|n| n == "ferrolb-lab") {
        return current_exe.to_path_buf();
    }
    let mut dir = current_exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    dir.join("ferrolb-lab")
}

/// The `ferrolb-lab` binary: `$FERROLB_LAB_BIN`, else next to the current executable.
pub fn lab_bin() -> Result<PathBuf, ToolsError> {
    let path = match std::env::var_os(LAB_BIN_ENV).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().unwrap_or_default();
            lab_bin_candidate(&exe)
        }
    };
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(ToolsError::MissingLabBin(path))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_bin_is_found_in_the_profile_dir() {
        assert_eq!(
            lab_bin_candidate(Path::new("/w/target/debug/deps/lab_up-0123abcd")),
            PathBuf::from("/w/target/debug/ferrolb-lab")
        );
        assert_eq!(
            lab_bin_candidate(Path::new("/w/target/debug/ferrolb-lab")),
            PathBuf::from("/w/target/debug/ferrolb-lab")
        );
        assert_eq!(
            lab_bin_candidate(Path::new("/w/target/release/other-tool")),
            PathBuf::from("/w/target/release/ferrolb-lab")
        );
    }

    #[test]
    fn build_script_output_last_line() {
        assert_eq!(last_line("noise\n/cache/bin\n\n"), Some("/cache/bin"));
        assert_eq!(last_line(""), None);
    }
}
