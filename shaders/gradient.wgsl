// Gradient of the binary logistic loss (loss == 0) or half the squared error (loss == 1)
// of a linear model over a chunk of rows.
//
// Each workgroup takes WG consecutive rows: every thread computes its row's margin and
// residual, then thread j sums residual * feature j over the workgroup's rows (features are
// read row-major, consecutive threads reading consecutive features), and the intercept
// gradient, loss and row count are workgroup tree reductions. Workgroup g writes
// [gradient (dim), intercept gradient, loss, rows] at partials[g * (dim + 3)]; the host
// adds the workgroups' partials in f64.

const WG: u32 = 256u;

struct Params {
    rows: u32,
    dim: u32,
    loss: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
// Coefficients (dim), then the intercept.
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;

var<workgroup> residual: array<f32, WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let lid = local.x;
    let group = group_index(wid, groups);
    let d = params.dim;
    let first = group * WG;
    let row = first + lid;
    var r = 0.0;
    var loss = 0.0;
    var present = 0.0;
    if row < params.rows {
        var m = weights[d];
        let base = row * d;
        for (var j = 0u; j < d; j = j + 1u) {
            m = m + features[base + j] * weights[j];
        }
        let y = labels[row];
        if params.loss == 0u {
            // log(1 + e^m) - y m, and sigmoid(m) - y, without overflow.
            loss = max(m, 0.0) + log(1.0 + exp(-abs(m))) - y * m;
            r = 1.0 / (1.0 + exp(-m)) - y;
        } else {
            r = m - y;
            loss = 0.5 * r * r;
        }
        present = 1.0;
    }
    residual[lid] = r;
    workgroupBarrier();
    let count = min(WG, params.rows - min(first, params.rows));
    let out = group * (d + 3u);
    for (var j = lid; j < d; j = j + WG) {
        var g = 0.0;
        for (var i = 0u; i < count; i = i + 1u) {
            g = g + residual[i] * features[(first + i) * d + j];
        }
        partials[out + j] = g;
    }
    let r_sum = workgroup_sum(lid, r);
    let loss_sum = workgroup_sum(lid, loss);
    let rows = workgroup_sum(lid, present);
    if lid == 0u {
        partials[out + d] = r_sum;
        partials[out + d + 1u] = loss_sum;
        partials[out + d + 2u] = rows;
    }
}
