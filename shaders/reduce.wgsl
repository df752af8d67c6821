// Workgroup tree reduction shared by Ember's mllib kernels (prepended to each of them).
// The including shader defines `const WG: u32`, its workgroup size, a power of two.

var<workgroup> reduce_scratch: array<f32, WG>;

// Sums `value` over the workgroup: pairs are added in workgroup memory, halving the active
// threads each step (log2(WG) steps). Every thread must call it (it has barriers) and every
// thread gets the total.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    reduce_scratch[lid] = value;
    workgroupBarrier();
    var stride = WG / 2u;
    loop {
        if stride == 0u {
            break;
        }
        if lid < stride {
            reduce_scratch[lid] = reduce_scratch[lid] + reduce_scratch[lid + stride];
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    let total = reduce_scratch[0];
    workgroupBarrier();
    return total;
}

// The workgroup's index in a dispatch that may be 2-D (more than 65535 workgroups).
fn group_index(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
}
