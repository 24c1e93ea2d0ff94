//! Compiles `proto/` (repository root) without a system `protoc`:
//! protox parses and links the schemas (it ships google/protobuf/*.proto built in), and
//! tonic-prost-build generates the prost messages plus tonic clients and servers from the
//! resulting descriptor set.

use std::path::PathBuf;

/// Schemas to compile, relative to the `proto/` include root. See proto/SOURCES.md.
const PROTOS: &[&str] = &[
    "csi/v1/csi.proto",
    "pluginregistration/v1/api.proto",
    "cri/v1/api.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto").canonicalize()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }

    // Descriptor set for code generation: with comments, so the generated types are documented.
    let fds = protox::Compiler::new([&proto_root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();

    // Descriptor set exported as `FILE_DESCRIPTOR_SET` (for gRPC reflection and schema tests):
    // imports included so it is self-contained, comments dropped to keep the binary small.
    // `encode_file_descriptor_set` keeps custom options such as `csi_secret` and `alpha_*`,
    // which a round trip through `prost_types` would lose.
    let exported = protox::Compiler::new([&proto_root])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(PROTOS)?
        .encode_file_descriptor_set();
    std::fs::write(out_dir.join("wasmgate_proto_descriptor.bin"), exported)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // We print our own rerun-if-changed lines above; the proto paths prost-build would
        // emit do not exist on disk for a descriptor set.
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
