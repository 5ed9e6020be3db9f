//! Concatenation along the width and its backward: a conditional model's
//! layers read [x | onehot(label)]. Twins of `shaders/concat.wgsl`.

/// y (B, A + C) = [a (B, A) | b (B, C)], row by row.
pub fn concat_forward(y: &mut [f32], a: &[f32], b: &[f32], rows: usize) {
    if rows == 0 {
        return;
    }
    let (wa, wb) = (a.len() / rows, b.len() / rows);
    assert_eq!(y.len(), rows * (wa + wb), "concat_forward: output size");
    for ((y, a), b) in y.chunks_exact_mut(wa + wb).zip(a.chunks_exact(wa.max(1))).zip(b.chunks_exact(wb.max(1))) {
        y[..wa].copy_from_slice(&a[..wa]);
        y[wa..].copy_from_slice(&b[..wb]);
    }
}

/// dx (B, W) = (or, with `accumulate`, +=) columns at..at + W of dy (B, Y).
pub fn concat_backward(dx: &mut [f32], dy: &[f32], at: usize, rows: usize, accumulate: bool) {
    if rows == 0 {
        return;
    }
    let (w, wy) = (dx.len() / rows, dy.len() / rows);
    assert!(at + w <= wy, "concat_backward: columns {at}..{} of {wy}", at + w);
    for (dx, dy) in dx.chunks_exact_mut(w.max(1)).zip(dy.chunks_exact(wy)) {
        let src = &dy[at..at + w];
        if accumulate {
            dx.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        } else {
            dx.copy_from_slice(src);
        }
    }
}
