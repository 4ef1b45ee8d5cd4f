//! Images: the config and chain id of an image in containerd's store.

use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Containerd, Error, Result};
use crate::spec::ImageConfig;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Largest manifest or config blob read (they are a few KiB).
const MAX_BLOB: usize = 4 << 20;

/// What holdfastd needs of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The process defaults from its config.
    pub config: ImageConfig,
    /// The chain id of its layers: the parent of the container's snapshot.
    pub chain_id: String,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    rootfs: RootFs,
}

/// The chain id of layers with these diff ids (OCI image spec).
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut iter = diff_ids.iter();
    let mut chain = iter.next()?.clone();
    for d in iter {
        let h = Sha256::digest(format!("{chain} {d}").as_bytes());
        chain = format!("sha256:{}", hex(&h));
    }
    Some(chain)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Containerd {
    async fn read_blob(&self, image: &str, digest: &str) -> Result<Vec<u8>> {
        let mut stream = self
            .content()
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| Error::from_status("content.read", image, s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| Error::from_status("content.read", image, s))?;
            out.extend_from_slice(&chunk.data);
            if out.len() > MAX_BLOB {
                return Err(Error::Image {
                    image: image.to_string(),
                    reason: format!("blob {digest} is larger than {MAX_BLOB} bytes"),
                });
            }
        }
        Ok(out)
    }

    pub(super) fn content(
        &self,
    ) -> containerd_client::services::v1::content_client::ContentClient<tonic::transport::Channel>
    {
        containerd_client::services::v1::content_client::ContentClient::new(self.channel.clone())
    }

    /// Looks image `name` up (NotFound if containerd has none by that name)
    /// and reads its config and chain id, choosing this host's platform in
    /// a multi-platform index.
    pub async fn image(&self, name: &str) -> Result<ImageInfo> {
        let bad = |reason: String| Error::Image {
            image: name.to_string(),
            reason,
        };
        let image =
            containerd_client::services::v1::images_client::ImagesClient::new(self.channel.clone())
                .get(self.req(GetImageRequest {
                    name: name.to_string(),
                }))
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::NotFound => Error::NotFound(format!("image {name}")),
                    _ => Error::from_status("images.get", name, s),
                })?
                .into_inner()
                .image
                .ok_or_else(|| Error::NotFound(format!("image {name}")))?;
        let target = image
            .target
            .ok_or_else(|| bad("no target descriptor".into()))?;
        let mut digest = target.digest;
        if INDEX_TYPES.contains(&target.media_type.as_str()) {
            let blob = self.read_blob(name, &digest).await?;
            let index: Index =
                serde_json::from_slice(&blob).map_err(|e| bad(format!("index: {e}")))?;
            let chosen = index
                .manifests
                .into_iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == go_arch())
                        && !INDEX_TYPES.contains(&m.media_type.as_str())
                })
                .ok_or_else(|| bad(format!("no manifest for linux/{}", go_arch())))?;
            digest = chosen.digest;
        }
        let blob = self.read_blob(name, &digest).await?;
        let manifest: Manifest =
            serde_json::from_slice(&blob).map_err(|e| bad(format!("manifest: {e}")))?;
        let blob = self.read_blob(name, &manifest.config.digest).await?;
        let file: ConfigFile =
            serde_json::from_slice(&blob).map_err(|e| bad(format!("config: {e}")))?;
        let config = ImageConfig::from_json(&blob)?;
        let chain_id = chain_id(&file.rootfs.diff_ids).ok_or_else(|| bad("no layers".into()))?;
        Ok(ImageInfo { config, chain_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_id_of_one_layer_is_its_diff_id_and_then_hashes_pairs() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        let want = format!(
            "sha256:{}",
            hex(&Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(chain_id(&[a, b]), Some(want));
        assert_eq!(chain_id(&[]), None);
    }
}
