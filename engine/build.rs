//! Compiles `proto/ember.proto` into Rust (prost messages + tonic client/server).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps a fresh machine free of a system protobuf install.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/ember.proto");
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/ember.proto"], &["proto"])?;
    Ok(())
}
