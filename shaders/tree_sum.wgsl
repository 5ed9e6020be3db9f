// Sum over the workgroup in a fixed tree (deterministic, no float atomics);
// every thread must call it. Works in the including module's workgroup
// array `red` (at least WG floats), which it leaves free for reuse.
fn tree_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
