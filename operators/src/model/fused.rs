//! The transformer's two heaviest non-matmul parts with fused paths for the CPU backend:
//! causal grouped-query attention over heads laid out as the projections leave them,
//! `[b, t, heads·head_dim]`, and the SwiGLU product `silu(gate) · up`.
//!
//! burn's `attention` under autodiff is its generic decomposition: scores, a causal mask fill,
//! a max/sub/exp/sum/div softmax, each op saved for the backward pass; and it wants the heads
//! moved to `[b, heads, t, head_dim]` and each key/value head repeated over its group of query
//! heads. In a training step of μ_φ those copies, mask fills and softmax ops took about a third
//! of the time (perf, 2026-12-07: mask fill 7.5 %, reshape copies 10 %, exp and its backward
//! 8 %). On Flex ([`Cpu`]) and its autodiff ([`CpuTrain`]) this module instead
//!
//! - reads the heads as strided views `[b, kv_heads, group, t, head_dim]` of the projections
//!   (Flex's batched gemm takes any strides, and a key/value head is broadcast over its group of
//!   query heads with stride 0): no copy, no repeat;
//! - computes the causal softmax in place over the score matrices: the upper triangle is
//!   zeroed, never exponentiated;
//! - and, under autodiff, is a single op with a written-out backward pass (P the attention
//!   weights, s the scale, O = P·V):
//!   dV = Σ_group Pᵀ·dO, dP = dO·Vᵀ, dS = s·P ⊙ (dP − rowsum(P ⊙ dP)), dQ = dS·K,
//!   dK = Σ_group dSᵀ·Q.
//!
//! SwiGLU likewise: burn's `silu(g) · u` is three ops (sigmoid, mul, mul) whose backward
//! passes compute the sigmoid again (10 % of a step after the attention was fused); here it is
//! one pass forward, which keeps σ(g), and one backward:
//! dg = dy · u · σ · (1 + g · (1 − σ)), du = dy · g · σ.
//!
//! Other backends (CUDA) run burn's ops as before. The path is chosen by the backend's type
//! ([`std::any::TypeId`]), so the model code stays generic over `B: Backend`; the tests below
//! hold the fused paths to burn's, values and gradients.

use std::any::{Any, TypeId};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensorOps};
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use super::{Cpu, CpuTrain};

/// Causal attention of queries `q` (`[b, t, n_heads·hd]`) over keys `k` and values `v`
/// (`[b, t, n_kv_heads·hd]`), all at the same positions; the result is `[b, t, n_heads·hd]`,
/// head-major within a position as `q`.
pub(crate) fn causal<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    n_heads: usize,
    n_kv_heads: usize,
) -> Tensor<B, 3> {
    let [b, t, d] = q.dims();
    let shape = Heads { b, t, hd: d / n_heads, n_kv: n_kv_heads, group: n_heads / n_kv_heads };
    let f32_input = matches!(q.dtype(), DType::F32);
    if f32_input && TypeId::of::<B>() == TypeId::of::<Cpu>() {
        let [q, k, v] = [q, k, v].map(|x| same::<_, Tensor<Cpu, 3>>(x).into_primitive().tensor());
        let out = Tensor::<Cpu, 3>::from_primitive(TensorPrimitive::Float(forward(&shape, &q, &k, &v).0));
        return same(out);
    }
    if f32_input && TypeId::of::<B>() == TypeId::of::<CpuTrain>() {
        let [q, k, v] = [q, k, v].map(same::<_, Tensor<CpuTrain, 3>>);
        return same(fused_autodiff(shape, q, k, v));
    }
    unfused(q, k, v, n_heads, n_kv_heads, None)
}

/// The keys and values (`[b, kv_heads, positions, hd]`) of the positions a decoder layer has
/// seen so far: one layer's slot of a [`super::transformer::KvCache`].
pub(crate) type KvSlot<B> = Option<(Tensor<B, 4>, Tensor<B, 4>)>;

/// [`causal`] through burn's attention on any backend: the heads moved to `[b, heads, t, hd]`
/// and back. With `cache`, the keys and values of earlier positions are read from it and the
/// new ones appended (causal attention aligns the queries with the last `t` keys): the path of
/// cached decoding on every backend.
pub(crate) fn unfused<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    n_heads: usize,
    n_kv_heads: usize,
    cache: Option<&mut KvSlot<B>>,
) -> Tensor<B, 3> {
    let [b, t, d] = q.dims();
    let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, d / n_heads]).swap_dims(1, 2);
    let (q, mut k, mut v) = (heads(q, n_heads), heads(k, n_kv_heads), heads(v, n_kv_heads));
    if let Some(slot) = cache {
        if let Some((k0, v0)) = slot.take() {
            k = Tensor::cat(vec![k0, k], 2);
            v = Tensor::cat(vec![v0, v], 2);
        }
        *slot = Some((k.clone(), v.clone()));
    }
    causal_heads(q, k, v).swap_dims(1, 2).reshape([b, t, d])
}

/// burn's causal attention over heads `[b, heads, t, hd]` (`k`, `v`: `[b, kv_heads, tk, hd]`,
/// each key/value head repeated over its group of query heads); the queries are the last
/// `t` of the `tk` positions.
fn causal_heads<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, n_heads, _, hd] = q.dims();
    let [_, n_kv, tk, _] = k.dims();
    let group = n_heads / n_kv;
    let (k, v) = if group > 1 {
        let expand = |y: Tensor<B, 4>| y.unsqueeze_dim::<5>(2).repeat_dim(2, group).reshape([b, n_heads, tk, hd]);
        (expand(k), expand(v))
    } else {
        (k, v)
    };
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    attention(q, k, v, None, None, options)
}

/// `x` as the type it is: `T` and `U` are one type, which the caller has checked by `TypeId`.
fn same<T: 'static, U: 'static>(x: T) -> U {
    match (Box::new(x) as Box<dyn Any>).downcast::<U>() {
        Ok(u) => *u,
        Err(_) => unreachable!("the caller compared the types' ids"),
    }
}

/// The shape of one attention: batch, positions, head width, key/value heads and the query
/// heads per key/value head.
#[derive(Debug, Clone, Copy)]
struct Heads {
    b: usize,
    t: usize,
    hd: usize,
    n_kv: usize,
    group: usize,
}

impl Heads {
    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// `x` (`[b, t, n·hd]` with `n = n_kv · per`) as the view `[b, n_kv, per, t, hd]`.
    fn view(&self, x: &FlexTensor, per: usize) -> FlexTensor {
        x.reshape(Shape::new([self.b, self.t, self.n_kv, per, self.hd])).permute(&[0, 2, 3, 1, 4])
    }

    /// `[b, n_kv, per, t, hd]` back to `[b, t, n_kv·per·hd]` (one copy, a head's row at a
    /// time: Flex's strided copy walks element by element).
    fn unview(&self, x: FlexTensor) -> FlexTensor {
        let per = x.shape().dims::<5>()[2];
        let (t, hd, heads) = (self.t, self.hd, self.n_kv * per);
        let out_shape = Shape::new([self.b, t, heads * hd]);
        let x = x.to_contiguous();
        let src = x.as_slice::<f32>().expect("contiguous f32");
        let mut out = vec![0f32; src.len()];
        // Source: head-major ([b][head][pos][hd]); destination: position-major.
        out.par_chunks_mut(t * heads * hd).zip(src.par_chunks(heads * t * hd)).for_each(|(dst, src)| {
            for (head, rows) in src.chunks(t * hd).enumerate() {
                for (pos, row) in rows.chunks(hd).enumerate() {
                    let at = (pos * heads + head) * hd;
                    dst[at..at + hd].copy_from_slice(row);
                }
            }
        });
        flex(out, out_shape)
    }
}

/// The output `[b, t, n_heads·hd]` and the attention weights P (`[b, n_kv, group, t, t]`, zero
/// above the diagonal).
fn forward(h: &Heads, q: &FlexTensor, k: &FlexTensor, v: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (q5, k5, v5) = (h.view(q, h.group), h.view(k, 1), h.view(v, 1));
    let mut p = Cpu::float_matmul(q5, k5.transpose(3, 4));
    let scale = h.scale();
    p.storage_mut::<f32>().par_chunks_mut(h.t * h.t).for_each(|m| {
        for (i, row) in m.chunks_mut(h.t).enumerate() {
            let (live, future) = row.split_at_mut(i + 1);
            let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in live.iter_mut() {
                *x = ((*x - max) * scale).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            live.iter_mut().for_each(|x| *x *= inv);
            future.fill(0.0);
        }
    });
    let out = h.unview(Cpu::float_matmul(p.clone(), v5));
    (out, p)
}

/// The gradients of `q`, `k` and `v` given the output's gradient `grad` (see the module docs).
fn backward(h: &Heads, [q, k, v, p]: [FlexTensor; 4], grad: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (q5, k5, v5) = (h.view(&q, h.group), h.view(&k, 1), h.view(&v, 1));
    let g5 = h.view(&grad, h.group);
    let over_group = |x: FlexTensor| if h.group > 1 { Cpu::float_sum_dim(x, 2) } else { x };
    let dv = over_group(Cpu::float_matmul(p.transpose(3, 4), g5.clone()));
    let mut ds = Cpu::float_matmul(g5, v5.transpose(3, 4));
    let scale = h.scale();
    let weights = p.storage::<f32>();
    ds.storage_mut::<f32>().par_chunks_mut(h.t * h.t).zip(weights.par_chunks(h.t * h.t)).for_each(|(dm, pm)| {
        for (i, (row, prow)) in dm.chunks_mut(h.t).zip(pm.chunks(h.t)).enumerate() {
            let (live, future) = row.split_at_mut(i + 1);
            let prow = &prow[..=i];
            let dot: f32 = live.iter().zip(prow).map(|(d, p)| d * p).sum();
            for (d, p) in live.iter_mut().zip(prow) {
                *d = scale * p * (*d - dot);
            }
            future.fill(0.0);
        }
    });
    let dq = Cpu::float_matmul(ds.clone(), k5);
    let dk = over_group(Cpu::float_matmul(ds.transpose(3, 4), q5));
    (h.unview(dq), h.unview(dk), h.unview(dv))
}

/// A contiguous f32 Flex tensor of `values`.
fn flex(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The fused attention as one op of the autodiff graph.
#[derive(Debug)]
struct FusedAttention;

impl Backward<Cpu, 3> for FusedAttention {
    /// The shape, then q, k, v and the attention weights.
    type State = (Heads, [FlexTensor; 4]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (h, saved) = ops.state;
        let grad = grads.consume::<Cpu>(&ops.node);
        let (dq, dk, dv) = backward(&h, saved, grad);
        for (parent, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<Cpu>(node.id, g);
            }
        }
    }
}

fn fused_autodiff(
    h: Heads,
    q: Tensor<CpuTrain, 3>,
    k: Tensor<CpuTrain, 3>,
    v: Tensor<CpuTrain, 3>,
) -> Tensor<CpuTrain, 3> {
    let [q, k, v] = [q, k, v].map(|x| x.into_primitive().tensor());
    let prep = FusedAttention.prepare::<NoCheckpointing>([&q, &k, &v].map(|x| Arc::clone(&x.node)));
    let out = match prep.compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (out, p) = forward(&h, &q.primitive, &k.primitive, &v.primitive);
            prep.finish((h, [q.primitive, k.primitive, v.primitive, p]), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&h, &q.primitive, &k.primitive, &v.primitive).0),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `silu(gate) · up`, elementwise (`[.., d_ff]` both).
pub(crate) fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let f32_input = matches!(gate.dtype(), DType::F32);
    if f32_input && TypeId::of::<B>() == TypeId::of::<Cpu>() {
        let [g, u] = [gate, up].map(|x| same::<_, Tensor<Cpu, D>>(x).into_primitive().tensor());
        let out = swiglu_forward(&g, &u).0;
        return same(Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(out)));
    }
    if f32_input && TypeId::of::<B>() == TypeId::of::<CpuTrain>() {
        let [g, u] = [gate, up].map(|x| same::<_, Tensor<CpuTrain, D>>(x).into_primitive().tensor());
        let prep = FusedSwiGlu.prepare::<NoCheckpointing>([&g, &u].map(|x| Arc::clone(&x.node)));
        let out = match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, sig) = swiglu_forward(&g.primitive, &u.primitive);
                prep.finish([g.primitive, u.primitive, sig], out)
            }
            OpsKind::UnTracked(prep) => prep.finish(swiglu_forward(&g.primitive, &u.primitive).0),
        };
        return same(Tensor::<CpuTrain, D>::from_primitive(TensorPrimitive::Float(out)));
    }
    silu(gate) * up
}

/// Elements per parallel chunk of the elementwise passes.
const CHUNK: usize = 1 << 14;

/// `silu(g) · u` and σ(g), both shaped as `g`.
fn swiglu_forward(g: &FlexTensor, u: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (g, u) = (g.to_contiguous(), u.to_contiguous());
    let (gs, us) = (g.as_slice::<f32>().expect("contiguous"), u.as_slice::<f32>().expect("contiguous"));
    let (mut out, mut sig) = (vec![0f32; gs.len()], vec![0f32; gs.len()]);
    out.par_chunks_mut(CHUNK)
        .zip(sig.par_chunks_mut(CHUNK))
        .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
        .for_each(|((o, s), (g, u))| {
            for i in 0..o.len() {
                let sg = 1.0 / (1.0 + (-g[i]).exp());
                s[i] = sg;
                o[i] = g[i] * sg * u[i];
            }
        });
    let shape = g.shape();
    (flex(out, shape.clone()), flex(sig, shape))
}

/// The fused SwiGLU as one op of the autodiff graph.
#[derive(Debug)]
struct FusedSwiGlu;

impl Backward<Cpu, 2> for FusedSwiGlu {
    /// The gate, the up projection and σ(gate).
    type State = [FlexTensor; 3];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [g, u, sig] = ops.state.map(|x| x.to_contiguous());
        let grad = grads.consume::<Cpu>(&ops.node).to_contiguous();
        let [gs, us, ss, dy] = [&g, &u, &sig, &grad].map(|x| x.as_slice::<f32>().expect("contiguous"));
        let (mut dg, mut du) = (vec![0f32; gs.len()], vec![0f32; gs.len()]);
        dg.par_chunks_mut(CHUNK)
            .zip(du.par_chunks_mut(CHUNK))
            .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)).zip(ss.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK))))
            .for_each(|((dg, du), ((g, u), (s, dy)))| {
                for i in 0..dg.len() {
                    let silu = g[i] * s[i];
                    du[i] = dy[i] * silu;
                    dg[i] = dy[i] * u[i] * (s[i] + silu * (1.0 - s[i]));
                }
            });
        let shape = g.shape();
        for (parent, d) in ops.parents.into_iter().zip([dg, du]) {
            if let Some(node) = parent {
                grads.register::<Cpu>(node.id, flex(d, shape.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn close(what: &str, a: Tensor<Cpu, 3>, b: Tensor<Cpu, 3>) {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().into_vec().unwrap(), b.into_data().into_vec().unwrap());
        assert_eq!(a.len(), b.len());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let scale = b.iter().map(|x| x.abs()).fold(0f32, f32::max).max(1.0);
        assert!(worst <= 2e-5 * scale, "{what}: differs by {worst} (largest {scale})");
    }

    #[test]
    fn the_fused_attention_equals_burns_values_and_gradients() {
        let device = Default::default();
        // (batch, positions, query heads, key/value heads, head width): grouped 2 and 3 ways,
        // ungrouped, one position, and an odd length.
        for (b, t, n, kv, hd) in
            [(2, 7, 4, 2, 8), (1, 13, 3, 1, 4), (3, 5, 2, 2, 6), (2, 1, 4, 1, 8), (1, 33, 6, 3, 16)]
        {
            let draw = |w: usize| Tensor::<Cpu, 3>::random([b, t, w], Distribution::Normal(0.0, 1.5), &device);
            let (q, k, v, w) = (draw(n * hd), draw(kv * hd), draw(kv * hd), draw(n * hd));
            // Inference: the fused Flex path against burn's.
            let fused = causal(q.clone(), k.clone(), v.clone(), n, kv);
            close("output", fused, unfused(q.clone(), k.clone(), v.clone(), n, kv, None));
            // Training: the fused op's gradients against those of burn's decomposition.
            let grads = |fused: bool| {
                let track = |x: &Tensor<Cpu, 3>| Tensor::<CpuTrain, 3>::from_inner(x.clone()).require_grad();
                let (q, k, v) = (track(&q), track(&k), track(&v));
                let out = if fused {
                    causal(q.clone(), k.clone(), v.clone(), n, kv)
                } else {
                    unfused(q.clone(), k.clone(), v.clone(), n, kv, None)
                };
                let loss = (out.clone() * Tensor::from_inner(w.clone())).sum();
                let g = loss.backward();
                let grad = |x: &Tensor<CpuTrain, 3>| x.grad(&g).expect("tracked");
                (out.inner(), grad(&q), grad(&k), grad(&v))
            };
            let (a, b) = (grads(true), grads(false));
            close("autodiff output", a.0, b.0);
            close("dq", a.1, b.1);
            close("dk", a.2, b.2);
            close("dv", a.3, b.3);
        }
    }

    #[test]
    fn the_fused_swiglu_equals_burns_values_and_gradients() {
        let device = Default::default();
        let draw = || Tensor::<Cpu, 3>::random([3, 5, 40_001 / 15], Distribution::Normal(0.0, 3.0), &device);
        let (g, u, w) = (draw(), draw(), draw());
        close("output", swiglu(g.clone(), u.clone()), silu(g.clone()) * u.clone());
        let grads = |fused: bool| {
            let track = |x: &Tensor<Cpu, 3>| Tensor::<CpuTrain, 3>::from_inner(x.clone()).require_grad();
            let (g, u) = (track(&g), track(&u));
            let out = if fused { swiglu(g.clone(), u.clone()) } else { silu(g.clone()) * u.clone() };
            let loss = (out.clone() * Tensor::from_inner(w.clone())).sum();
            let grads = loss.backward();
            (out.inner(), g.grad(&grads).expect("tracked"), u.grad(&grads).expect("tracked"))
        };
        let (a, b) = (grads(true), grads(false));
        close("autodiff output", a.0, b.0);
        close("dgate", a.1, b.1);
        close("dup", a.2, b.2);
    }
}
