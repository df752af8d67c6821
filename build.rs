//! Compiles the Spark Connect protocol subset `ember server` speaks (`proto/`) into Rust
//! (prost messages, the tonic service, and the client `ember sql --connect` uses).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps a fresh machine free of a system protobuf install.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/spark_connect.proto");
    println!("cargo:rerun-if-changed=proto/google_rpc.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .bytes(".spark.connect.ExecutePlanResponse.ArrowBatch.data")
        .compile_protos(
            &["proto/spark_connect.proto", "proto/google_rpc.proto"],
            &["proto"],
        )?;
    Ok(())
}
