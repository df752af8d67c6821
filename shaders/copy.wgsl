// Copy kernel: dst = src, 16 bytes per invocation. Not part of training: benches time it
// to measure the device's copy bandwidth over the same bytes a training pass reads.

const WG: u32 = 128u;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(128)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.x + id.y * groups.x * WG;
    if (i < arrayLength(&src)) {
        dst[i] = src[i];
    }
}
