// k-means assignment over a chunk of rows: each row goes to its nearest centre (ties to
// the lower index); per workgroup the coordinate sums and counts of the rows each centre
// got, and the summed squared distances (a workgroup tree reduction).
//
// Workgroup g writes [sums (k x dim), counts (k), cost] at partials[g * (k * (dim + 1) + 1)];
// the host adds them in f64.

const WG: u32 = 256u;

struct Params {
    rows: u32,
    dim: u32,
    k: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> features: array<f32>;
// Row-major k x dim centres.
@group(0) @binding(2) var<storage, read> centres: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;

var<workgroup> assigned: array<u32, WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let lid = local.x;
    let group = group_index(wid, groups);
    let d = params.dim;
    let k = params.k;
    let first = group * WG;
    let row = first + lid;
    var best = 0u;
    var best_dist = 0.0;
    if row < params.rows {
        let base = row * d;
        best_dist = 3.0e38;
        for (var c = 0u; c < k; c = c + 1u) {
            var dist = 0.0;
            for (var j = 0u; j < d; j = j + 1u) {
                let diff = features[base + j] - centres[c * d + j];
                dist = dist + diff * diff;
            }
            if dist < best_dist {
                best_dist = dist;
                best = c;
            }
        }
    }
    assigned[lid] = best;
    workgroupBarrier();
    let count = min(WG, params.rows - min(first, params.rows));
    let out = group * (k * (d + 1u) + 1u);
    for (var p = lid; p < k * d; p = p + WG) {
        let c = p / d;
        let j = p % d;
        var s = 0.0;
        for (var i = 0u; i < count; i = i + 1u) {
            if assigned[i] == c {
                s = s + features[(first + i) * d + j];
            }
        }
        partials[out + p] = s;
    }
    for (var c = lid; c < k; c = c + WG) {
        var n = 0.0;
        for (var i = 0u; i < count; i = i + 1u) {
            if assigned[i] == c {
                n = n + 1.0;
            }
        }
        partials[out + k * d + c] = n;
    }
    let cost = workgroup_sum(lid, best_dist);
    if lid == 0u {
        partials[out + k * (d + 1u)] = cost;
    }
}
