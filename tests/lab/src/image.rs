//! Container images for the lab's real nodes, made here because no registry is reachable: the
//! pod sandbox (`pause`), the test backend, and a debug variant of the ferrolb image. Each is
//! written as an OCI image archive that `ctr images import` takes.
//!
//! `pause` and `backend` are standard-library-only programs (`images/*.rs`, also compiled into
//! this crate as modules, so clippy and the tests see them); they are compiled here into static
//! binaries with `rustc` alone and cached by the hash of their source. The debug ferrolb image
//! packs the workspace's debug binaries, stripped of debug info, with the shared libraries they
//! load, under the same reference as the release image, so the chart's defaults work with
//! either. The release image comes from `image/build.sh`.
//!
//! Owns image files only; importing them into a node is [`crate::lab`]'s job.

#[path = "../images/backend.rs"]
pub mod backend;
#[path = "../images/pause.rs"]
pub mod pause;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The sandbox image reference (what containerd's `sandbox_image` names).
pub const PAUSE: &str = crate::node::PAUSE_IMAGE;
/// The test backend's reference.
pub const BACKEND: &str = "ferrolb.local/backend:lab";
/// The ferrolb image's repository, as the chart names it by default.
pub const FERROLB_REPOSITORY: &str = "ghcr.io/ferrolb/ferrolb";
/// The uid the images run as unless a pod says otherwise.
const NONROOT: &str = "65532:65532";

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper program (rustc, objcopy, ldd) failed.
    #[error("{cmd} failed: {detail}")]
    Tool {
        /// The command.
        cmd: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A file to put into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path inside the image.
    pub path: String,
    /// Where its content comes from on this machine.
    pub source: PathBuf,
    /// Permission bits.
    pub mode: u32,
}

/// What an image holds and how it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The full reference, e.g. `registry.k8s.io/pause:3.10`.
    pub reference: String,
    /// Entrypoint argv.
    pub entrypoint: Vec<String>,
    /// `uid:gid` the container runs as unless the pod says otherwise.
    pub user: String,
    /// The files (one layer).
    pub files: Vec<ImageFile>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The uncompressed layer tar of `files`: parent directories first, every entry owned by root,
/// timestamps zero, so the same files give the same digest.
pub fn layer_tar(files: &[ImageFile]) -> Result<Vec<u8>, ImageError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let rel = f.path.trim_start_matches('/');
        let mut parent = Path::new(rel).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.contains(&d) {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(0);
            h.set_cksum();
            builder
                .append_data(&mut h, format!("{d}/"), std::io::empty())
                .map_err(io_err("tar", Path::new(&d)))?;
            dirs.push(d);
        }
        let data = std::fs::read(&f.source).map_err(io_err("read", &f.source))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        builder
            .append_data(&mut h, rel, data.as_slice())
            .map_err(io_err("tar", &f.source))?;
    }
    builder
        .into_inner()
        .map_err(io_err("tar", Path::new("layer")))
}

/// Writes `spec` as an OCI image archive (`oci-layout`, `index.json`, `blobs/sha256/*` in a
/// tar) at `out`. The index names the image both ways containerd's importer reads.
pub fn write_oci_archive(spec: &ImageSpec, out: &Path) -> Result<(), ImageError> {
    let layer = layer_tar(&spec.files)?;
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "User": spec.user,
            "Env": ["PATH=/"],
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    }))
    .unwrap_or_default();
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))
    .unwrap_or_default();
    let manifest_digest = sha256_hex(&manifest);
    let tag = spec
        .reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": spec.reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .unwrap_or_default();

    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |name: String, data: &[u8]| -> Result<(), ImageError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        archive
            .append_data(&mut h, &name, data)
            .map_err(io_err("tar", Path::new(&name)))
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    add(format!("blobs/sha256/{manifest_digest}"), &manifest)?;
    add(format!("blobs/sha256/{config_digest}"), &config)?;
    add(format!("blobs/sha256/{layer_digest}"), &layer)?;
    let bytes = archive
        .into_inner()
        .map_err(io_err("tar", Path::new("archive")))?;
    write_atomically(out, &bytes)
}

fn write_atomically(out: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(io_err("rename", out))
}

/// The image cache: `$FERROLB_CACHE/images`, else `${XDG_CACHE_HOME:-~/.cache}/ferrolb/images`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("FERROLB_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("ferrolb"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferrolb")))
        .unwrap_or_else(|| PathBuf::from("/tmp/ferrolb-cache"));
    base.join("images")
}

/// Compiles a standard-library-only program into a static binary with `rustc` (or `$RUSTC`),
/// cached under `cache` by the hash of its source. Returns the binary.
pub fn compile_static(name: &str, source: &str, cache: &Path) -> Result<PathBuf, ImageError> {
    let hash = &sha256_hex(source.as_bytes())[..16];
    let bin = cache.join(format!("bin/{name}-{hash}"));
    if bin.is_file() {
        return Ok(bin);
    }
    let work = cache.join(format!("build/{name}-{hash}-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    let src = work.join(format!("{name}.rs"));
    std::fs::write(&src, source).map_err(io_err("write", &src))?;
    let out = work.join(name);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let argv = [
        rustc.as_str(),
        "--edition=2024",
        "--crate-type=bin",
        "-Copt-level=2",
        "-Cpanic=abort",
        "-Cstrip=symbols",
        "-Ctarget-feature=+crt-static",
        "-o",
    ];
    let result = Command::new(argv[0])
        .args(&argv[1..])
        .arg(&out)
        .arg(&src)
        .stdin(Stdio::null())
        .output();
    let done = match result {
        Ok(o) if o.status.success() => {
            if let Some(dir) = bin.parent() {
                std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            }
            std::fs::rename(&out, &bin).map_err(io_err("rename", &bin))
        }
        Ok(o) => Err(ImageError::Tool {
            cmd: format!("{} {}", argv.join(" "), src.display()),
            detail: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }),
        Err(e) => Err(ImageError::Tool {
            cmd: argv[0].to_string(),
            detail: e.to_string(),
        }),
    };
    let _ = std::fs::remove_dir_all(&work);
    done?;
    Ok(bin)
}

/// The pause and backend archives, built on first use and cached.
pub fn lab_images() -> Result<Vec<PathBuf>, ImageError> {
    let cache = cache_dir();
    let mut archives = Vec::new();
    for (name, source, reference, entry, user) in [
        (
            "pause",
            include_str!("../images/pause.rs"),
            PAUSE,
            "/pause",
            NONROOT,
        ),
        (
            "backend",
            include_str!("../images/backend.rs"),
            BACKEND,
            "/backend",
            NONROOT,
        ),
    ] {
        let bin = compile_static(name, source, &cache)?;
        let stem = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        let archive = cache.join(format!("{stem}.oci.tar"));
        if !archive.is_file() {
            write_oci_archive(
                &ImageSpec {
                    reference: reference.into(),
                    entrypoint: vec![entry.into()],
                    user: user.into(),
                    files: vec![ImageFile {
                        path: entry.into(),
                        source: bin.clone(),
                        mode: 0o555,
                    }],
                },
                &archive,
            )?;
        }
        archives.push(archive);
    }
    Ok(archives)
}

/// The shared libraries `binary` loads, from `ldd` (empty for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::Tool {
            cmd: "ldd".into(),
            detail: e.to_string(),
        })?;
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

/// The library paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x..)` and the
/// loader's own `/lib64/ld-linux-x86-64.so.2 (0x..)` line.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

/// A debug ferrolb image from the workspace's debug binaries in `bin_dir`: each stripped of
/// debug info (with `objcopy`), plus the shared libraries they load at their own paths. Tagged
/// like the release image (`ghcr.io/ferrolb/ferrolb:<version>`), written to `out`.
pub fn debug_ferrolb_image(bin_dir: &Path, version: &str, out: &Path) -> Result<(), ImageError> {
    let stage = out.with_extension("stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).map_err(io_err("create", &stage))?;
    let result = stage_and_write(bin_dir, version, &stage, out);
    let _ = std::fs::remove_dir_all(&stage);
    result
}

fn stage_and_write(
    bin_dir: &Path,
    version: &str,
    stage: &Path,
    out: &Path,
) -> Result<(), ImageError> {
    let mut files = Vec::new();
    let mut libs = Vec::new();
    for name in ["ferrolb-controller", "ferrolb-speaker"] {
        let src = bin_dir.join(name);
        let stripped = stage.join(name);
        let o = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&src)
            .arg(&stripped)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ImageError::Tool {
                cmd: "objcopy".into(),
                detail: e.to_string(),
            })?;
        if !o.status.success() {
            return Err(ImageError::Tool {
                cmd: format!("objcopy --strip-debug {}", src.display()),
                detail: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        libs.extend(shared_libraries(&src)?);
        files.push(ImageFile {
            path: format!("/{name}"),
            source: stripped,
            mode: 0o555,
        });
    }
    libs.sort();
    libs.dedup();
    for lib in libs {
        // The loader follows symlinks; the image gets the real file under the linked name.
        let real = std::fs::canonicalize(&lib).map_err(io_err("resolve", &lib))?;
        files.push(ImageFile {
            path: lib.to_string_lossy().into_owned(),
            source: real,
            mode: 0o555,
        });
    }
    write_oci_archive(
        &ImageSpec {
            reference: format!("{FERROLB_REPOSITORY}:{version}"),
            entrypoint: vec!["/ferrolb-controller".into()],
            user: NONROOT.into(),
            files,
        },
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_once() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn archive_is_a_valid_oci_layout_with_matching_digests() {
        let dir = std::env::temp_dir().join(format!("flb-image-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let payload = dir.join("payload");
        std::fs::write(&payload, b"#!/bin/true\n").expect("payload");
        let out = dir.join("img.oci.tar");
        let spec = ImageSpec {
            reference: "ferrolb.local/test:1".into(),
            entrypoint: vec!["/bin/x".into()],
            user: "65532:65532".into(),
            files: vec![ImageFile {
                path: "/bin/x".into(),
                source: payload,
                mode: 0o555,
            }],
        };
        write_oci_archive(&spec, &out).expect("archive");
        let mut ar = tar::Archive::new(std::fs::File::open(&out).expect("open"));
        let mut entries = std::collections::BTreeMap::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            entries.insert(name, data);
        }
        let _ = std::fs::remove_dir_all(&dir);
        // Every blob is stored under its own digest.
        for (name, data) in &entries {
            if let Some(d) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(d, sha256_hex(data), "{name}");
            }
        }
        let index: serde_json::Value =
            serde_json::from_slice(&entries["index.json"]).expect("index");
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "ferrolb.local/test:1"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "1");
        let digest = m["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let manifest: serde_json::Value =
            serde_json::from_slice(&entries[&format!("blobs/sha256/{digest}")]).expect("manifest");
        let layer_digest = manifest["layers"][0]["digest"].as_str().expect("layer");
        let config_digest = manifest["config"]["digest"].as_str().expect("config");
        let config: serde_json::Value = serde_json::from_slice(
            &entries[&format!(
                "blobs/sha256/{}",
                config_digest.trim_start_matches("sha256:")
            )],
        )
        .expect("config");
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
        assert_eq!(config["config"]["User"], "65532:65532");
        // The layer holds the parent directory, then the file with its mode.
        let layer = &entries[&format!(
            "blobs/sha256/{}",
            layer_digest.trim_start_matches("sha256:")
        )];
        let mut lt = tar::Archive::new(layer.as_slice());
        let files: Vec<(String, u32)> = lt
            .entries()
            .expect("layer entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    e.header().mode().expect("mode"),
                )
            })
            .collect();
        assert_eq!(
            files,
            [("bin/".to_string(), 0o755), ("bin/x".to_string(), 0o555)]
        );
    }

    #[test]
    fn the_same_files_give_the_same_layer() {
        let dir = std::env::temp_dir().join(format!("flb-layer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("f");
        std::fs::write(&f, b"x").expect("write");
        let files = [ImageFile {
            path: "/a/b/f".into(),
            source: f,
            mode: 0o444,
        }];
        let a = layer_tar(&files).expect("tar");
        let b = layer_tar(&files).expect("tar");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
    }

    #[test]
    fn backend_answers_name_node_and_canonical_source() {
        let cfg = backend::parse_args(&[
            "--name".into(),
            "web-1".into(),
            "--node".into(),
            "node-2".into(),
            "--udp".into(),
            "0".into(),
        ])
        .expect("args");
        assert_eq!(cfg.udp, None);
        assert_eq!(cfg.http, Some(8080));
        let peer: std::net::SocketAddr = "[::ffff:198.51.100.200]:40000".parse().expect("addr");
        assert_eq!(
            backend::line(&cfg, peer),
            "pod=web-1 node=node-2 src=198.51.100.200:40000\n"
        );
        assert!(backend::parse_args(&["--http".into(), "x".into()]).is_err());
        assert!(backend::parse_args(&["--bogus".into()]).is_err());
        assert!(backend::parse_args(&["--name".into()]).is_err());
    }
}
