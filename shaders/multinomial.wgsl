// Gradient of the softmax cross-entropy over `classes` classes (at most MAX_CLASSES) over a
// chunk of rows.
//
// Each workgroup takes WG consecutive rows: every thread computes its row's margins, their
// softmax and the residuals softmax - one-hot (kept in workgroup memory), then threads share
// the (class, feature) pairs, each summing residual * feature over the workgroup's rows.
// Workgroup g writes [gradient (classes x dim), intercept gradients (classes), loss, rows]
// at partials[g * (classes * (dim + 1) + 2)]; the host adds them in f64.

const WG: u32 = 64u;
const MAX_CLASSES: u32 = 32u;

struct Params {
    rows: u32,
    dim: u32,
    classes: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
// Coefficients (classes x dim, row-major), then the intercepts (classes).
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;

var<workgroup> residual: array<f32, 2048>; // WG * MAX_CLASSES

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let lid = local.x;
    let group = group_index(wid, groups);
    let d = params.dim;
    let k = params.classes;
    let first = group * WG;
    let row = first + lid;
    var loss = 0.0;
    var present = 0.0;
    let slot = lid * MAX_CLASSES;
    if row < params.rows {
        let base = row * d;
        var top = -3.0e38;
        for (var c = 0u; c < k; c = c + 1u) {
            var m = weights[k * d + c];
            for (var j = 0u; j < d; j = j + 1u) {
                m = m + features[base + j] * weights[c * d + j];
            }
            residual[slot + c] = m;
            top = max(top, m);
        }
        let y = u32(labels[row]);
        var total = 0.0;
        var true_margin = 0.0;
        for (var c = 0u; c < k; c = c + 1u) {
            let m = residual[slot + c];
            if c == y {
                true_margin = m;
            }
            let e = exp(m - top);
            residual[slot + c] = e;
            total = total + e;
        }
        for (var c = 0u; c < k; c = c + 1u) {
            var r = residual[slot + c] / total;
            if c == y {
                r = r - 1.0;
            }
            residual[slot + c] = r;
        }
        loss = log(total) + top - true_margin;
        present = 1.0;
    } else {
        for (var c = 0u; c < k; c = c + 1u) {
            residual[slot + c] = 0.0;
        }
    }
    workgroupBarrier();
    let count = min(WG, params.rows - min(first, params.rows));
    let out = group * (k * (d + 1u) + 2u);
    for (var p = lid; p < k * d; p = p + WG) {
        let c = p / d;
        let j = p % d;
        var g = 0.0;
        for (var i = 0u; i < count; i = i + 1u) {
            g = g + residual[i * MAX_CLASSES + c] * features[(first + i) * d + j];
        }
        partials[out + p] = g;
    }
    for (var c = lid; c < k; c = c + WG) {
        var g = 0.0;
        for (var i = 0u; i < count; i = i + 1u) {
            g = g + residual[i * MAX_CLASSES + c];
        }
        partials[out + k * d + c] = g;
    }
    let loss_sum = workgroup_sum(lid, loss);
    let rows = workgroup_sum(lid, present);
    if lid == 0u {
        partials[out + k * (d + 1u)] = loss_sum;
        partials[out + k * (d + 1u) + 1u] = rows;
    }
}
