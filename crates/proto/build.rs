use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary can be shared between checkouts of the workspace.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "crm_sync/v1/common.proto",
        "crm_sync/v1/crm_event.proto",
        "crm_sync/v1/workflow_outcome.proto",
        "crm_sync/v1/salesscreen.proto",
        "crm_sync/v1/record_state.proto",
    ];
    println!("cargo:rerun-if-changed={}", proto_root.display());
    // protox compiles in pure Rust, so builds need no protoc on the machine.
    let descriptors = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("crm_sync_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // Ordered maps: no hashing per field when events and record states are decoded, and a
    // record state encodes to the same bytes whatever order its fields were set in.
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
