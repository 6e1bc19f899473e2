//! Sizes a peer chooses never reach an allocation failure, an overflow panic or an abort:
//! the `try_` kernels return a `SizeError` instead (the bindings raise ResourceLimitError).

use syft_mpc_ring::kernels::{self, checked_numel, try_zeroed, Conv2dParams, SizeError};
use syft_mpc_ring::R64;

#[test]
fn numel_overflow_is_an_error() {
    assert_eq!(checked_numel(&[1 << 17, 1 << 17], "x"), Ok(1 << 34));
    assert!(checked_numel(&[1 << 40, 1 << 40], "x").is_err());
    assert_eq!(checked_numel(&[usize::MAX, 0], "x"), Ok(0));
    assert_eq!(checked_numel(&[], "x"), Ok(1));
}

#[test]
fn zeroed_allocation_is_fallible() {
    // Past isize::MAX bytes: no layout exists.
    let e = try_zeroed(usize::MAX / 8 + 1, "huge").unwrap_err();
    assert!(e.0.contains("huge"), "{e}");
    // A valid layout that no machine can back (2^62 bytes): the allocator refuses, and we say so.
    let e = try_zeroed(1 << 59, "too big").unwrap_err();
    assert!(e.0.contains("cannot allocate"), "{e}");
    assert_eq!(try_zeroed(3, "small").unwrap(), vec![R64::ZERO; 3]);
    assert!(try_zeroed(0, "empty").unwrap().is_empty());
}

#[test]
fn matmul_with_an_unrepresentable_output_is_an_error() {
    // (2^40 x 0) @ (0 x 2^40): empty operands, 2^80 output elements.
    let e: SizeError = kernels::try_matmul(&[], &[], 1 << 40, 0, 1 << 40).unwrap_err();
    assert!(e.0.contains("matmul: output"), "{e}");
    // (2^31 x 0) @ (0 x 2^31): 2^62 elements, 2^65 bytes.
    assert!(kernels::try_matmul(&[], &[], 1 << 31, 0, 1 << 31).is_err());
    let e = kernels::try_bmm(&[], &[], 1 << 30, 1 << 20, 0, 1 << 20).unwrap_err();
    assert!(e.0.contains("bmm: output"), "{e}");
    // A product that fits is unchanged.
    let a = vec![R64(2); 6];
    let b = vec![R64(3); 6];
    assert_eq!(kernels::try_matmul(&a, &b, 2, 3, 2).unwrap(), vec![R64(18); 4]);
}

#[test]
fn conv2d_geometry_with_huge_padding_is_an_error() {
    let x = vec![R64(1); 4];
    let w = vec![R64(1); 1];
    for pad in [1usize << 62, usize::MAX / 2, usize::MAX] {
        let p = Conv2dParams { padding: [pad, pad], ..Default::default() };
        assert!(p.output_shape([1, 1, 2, 2], [1, 1, 1, 1]).is_err(), "padding {pad}");
        assert!(kernels::try_conv2d(&x, [1, 1, 2, 2], &w, [1, 1, 1, 1], &p).is_err(), "padding {pad}");
    }
    let p = Conv2dParams { dilation: [usize::MAX, 1], ..Default::default() };
    assert!(p.output_shape([1, 1, 2, 2], [1, 1, 3, 1]).is_err());
    // Padding 65,536 is representable (131,073^2 outputs): the shape is computed, and the
    // caller (the worker's memory budget) decides whether 137 GB may be allocated.
    let p = Conv2dParams { padding: [65_536, 65_536], ..Default::default() };
    assert_eq!(p.output_shape([1, 1, 2, 2], [1, 1, 1, 1]), Ok([1, 1, 131_074, 131_074]));
    // A small convolution still works through the fallible path.
    let p = Conv2dParams { padding: [1, 1], ..Default::default() };
    let (out, shape) = kernels::try_conv2d(&x, [1, 1, 2, 2], &w, [1, 1, 1, 1], &p).unwrap();
    assert_eq!(shape, [1, 1, 4, 4]);
    assert_eq!(out.iter().filter(|v| **v == R64(1)).count(), 4);
}
