//! Builds the XDP program (enforcer-ebpf) for the BPF target with aya-build; the object lands in
//! OUT_DIR and `datapath::program` embeds it from there.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "enforcer-ebpf")
        .ok_or_else(|| anyhow!("enforcer-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("enforcer-ebpf manifest has no parent directory"))?
        .to_string();
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
