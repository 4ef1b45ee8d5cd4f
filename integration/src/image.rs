//! Container images built on the spot, for containerd's CRI plugin (which
//! only runs images from its store): a docker-archive tar (`docker save`
//! layout: `manifest.json`, one config JSON and one uncompressed layer per
//! image) that `ctr images import` reads. Nothing is pulled.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// One image of an archive.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its full reference, e.g. `localhost/holdfast-it/pause:123x0`
    /// (`localhost/` keeps containerd from prefixing `docker.io/`).
    pub name: String,
    /// The image's entrypoint.
    pub entrypoint: Vec<String>,
    /// The image's command (arguments of the entrypoint).
    pub cmd: Vec<String>,
    /// The image's single layer: a tar of its root filesystem.
    pub layer: Vec<u8>,
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A tar of the folder `dir` as an image layer: paths relative to it,
/// symlinks kept as symlinks, owners root.
pub fn layer_from_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", dir)
        .with_context(|| format!("tar {}", dir.display()))?;
    b.into_inner().context("finish the layer tar")
}

/// A layer holding only `/bin/busybox` (a static binary, copied from the
/// host) and `/bin/<applet>` symlinks to it: enough for a pause image.
pub fn busybox_layer(applets: &[&str]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for d in ["bin", "dev", "proc", "sys", "tmp", "etc"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, d, std::io::empty())
            .with_context(|| format!("layer folder {d}"))?;
    }
    let busybox = fs::read(crate::rootfs::BUSYBOX)
        .with_context(|| format!("read {} (install busybox-static)", crate::rootfs::BUSYBOX))?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .context("layer bin/busybox")?;
    for a in applets {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .with_context(|| format!("layer bin/{a}"))?;
    }
    b.into_inner().context("finish the layer tar")
}

/// Writes a docker-archive tar holding `images` to `out`.
pub fn write_docker_archive(out: &Path, images: &[Image]) -> Result<()> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    let mut manifest = Vec::new();
    for img in images {
        let diff_id = sha256_digest(&img.layer);
        let layer_name = format!("{}/layer.tar", diff_id.trim_start_matches("sha256:"));
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Entrypoint": img.entrypoint,
                "Cmd": img.cmd,
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": "holdfast integration tests" }],
        });
        let config = serde_json::to_vec(&config).context("image config JSON")?;
        let config_name = format!(
            "{}.json",
            sha256_digest(&config).trim_start_matches("sha256:")
        );
        append_file(&mut b, &layer_name, &img.layer)?;
        append_file(&mut b, &config_name, &config)?;
        manifest.push(json!({
            "Config": config_name,
            "RepoTags": [img.name],
            "Layers": [layer_name],
        }));
    }
    let manifest = serde_json::to_vec(&manifest).context("manifest.json")?;
    append_file(&mut b, "manifest.json", &manifest)?;
    let data = b.into_inner().context("finish the image archive")?;
    let mut f = fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    f.write_all(&data)
        .with_context(|| format!("write {}", out.display()))
}

fn append_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data)
        .with_context(|| format!("archive member {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_lists_every_image_and_its_layer_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layer = b"not really a tar".to_vec();
        let img = Image {
            name: "localhost/x/y:z".into(),
            entrypoint: vec!["/bin/sleep".into()],
            cmd: vec!["infinity".into()],
            layer: layer.clone(),
        };
        let out = dir.path().join("a.tar");
        write_docker_archive(&out, &[img]).unwrap();
        let mut ar = tar::Archive::new(fs::File::open(&out).unwrap());
        let mut names = Vec::new();
        let mut manifest = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == "manifest.json" {
                std::io::Read::read_to_string(&mut e, &mut manifest).unwrap();
            }
            names.push(name);
        }
        let hex = sha256_digest(&layer)
            .trim_start_matches("sha256:")
            .to_string();
        assert!(names.contains(&format!("{hex}/layer.tar")), "{names:?}");
        assert!(manifest.contains("localhost/x/y:z"), "{manifest}");
    }
}
