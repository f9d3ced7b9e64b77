//! The backend extension: the top-k losses as one burn op with a hand-written backward.
//!
//! `topk_loss` returns per-sample losses `[batch]`. On an autodiff backend the forward pass also
//! computes the exact per-sample gradient (the numeric core produces both in one pass for about
//! the cost of two cross-entropy passes), keeps it as the op's state, and the backward is
//! `upstream[b] * grad[b, :]`: no autodiff graph through the polynomial recursion, and no second
//! evaluation.

// burn 0.22 deprecates its NdArray backend in favour of Flex; this module still supports it (the
// `ndarray` feature), so the extension macro's references to it must not warn.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
#[cfg(feature = "cube")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Autodiff, AutodiffBackend, Backend, DType, Flex};
use burn::backend::{TensorData, TensorMetadata};
use burn::tensor::{read_sync, Shape};
use smooth_topk::{AnyLoss, Loss, Scalar, TopkError};

/// Backends that evaluate the top-k losses. The provided methods run the numeric core on the
/// host copy of a batch, which works on any burn backend: that is what Flex and NdArray use
/// (their buffers are on the host already). The CubeCL backends (feature `cube`) override them
/// with the fused kernel on device buffers, through `Fusion` as burn wraps them, and `Autodiff`
/// over any of them adds the hand-written backward. burn routes a call to the backends listed
/// here; one it was not built with (LibTorch, Remote) is not listed, and calling the op on it
/// panics in burn's dispatch.
#[backend_extension(
    Autodiff,
    Flex,
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube")
)]
pub trait TopkLossBackend: Backend {
    /// Per-sample losses `[batch]` of `logits [batch, n]` against `targets [batch]`.
    #[fusion(dtype = logits, shape = Shape::new([logits[0]]))]
    fn topk_loss(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        loss: AnyLoss,
    ) -> FloatTensor<Self> {
        on_host::<Self>(logits, targets, loss, false).0
    }

    /// Per-sample losses `[batch]` and the gradient of each sample's loss `[batch, n]`.
    #[fusion(meta = |logits, _targets, _loss| (
        TensorSpec::new(Shape::new([logits.shape[0]]), logits.dtype),
        logits.clone(),
    ))]
    fn topk_loss_and_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        loss: AnyLoss,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (losses, grad) = on_host::<Self>(logits, targets, loss, true);
        (losses, grad.expect("gradient requested"))
    }
}

/// Reads a batch to the host, runs the numeric core and returns the results on the logits'
/// device and float dtype. Panics with the core's error message on invalid input (labels out
/// of range, non-finite logits); the shape checks happen before dispatch, in `loss.rs`. Also the
/// GPU backends' route for what their kernels do not take (see `gpu.rs`).
pub(crate) fn on_host<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    loss: AnyLoss,
    with_grad: bool,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let device = logits.device();
    let dtype = logits.dtype();
    let [batch, n] = logits.shape().dims::<2>();
    let labels: Vec<usize> = read_sync(B::int_into_data(targets))
        .expect("smooth-topk: cannot read targets")
        .try_into_vec_as::<i64>()
        .expect("smooth-topk: targets must be integers")
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            usize::try_from(t)
                .unwrap_or_else(|_| panic!("smooth-topk: sample {i}: label {t} is negative"))
        })
        .collect();
    let data = read_sync(B::float_into_data(logits)).expect("smooth-topk: cannot read logits");
    fn run<T: Scalar + burn::tensor::Element>(
        data: TensorData,
        labels: &[usize],
        n: usize,
        loss: AnyLoss,
        with_grad: bool,
    ) -> (TensorData, Option<TensorData>) {
        let scores: Vec<T> = data
            .try_into_vec_as::<T>()
            .expect("smooth-topk: float logits");
        let batch = labels.len();
        let mut losses = vec![T::from_f64(0.0); batch];
        let result = if with_grad {
            let mut grad = vec![T::from_f64(0.0); scores.len()];
            loss.loss_and_grad_per_sample(&scores, labels, n, &mut losses, &mut grad)
                .map(|()| Some(TensorData::new(grad, [batch, n])))
        } else {
            loss.loss_per_sample(&scores, labels, n, &mut losses)
                .map(|()| None)
        };
        match result {
            Ok(grad) => (TensorData::new(losses, [batch]), grad),
            // A loss that overflows is returned as the non-finite value it is (training stops
            // on it as on any divergence); the gradient is then meaningless.
            Err(TopkError::NotRepresentable { .. }) => {
                let grad = with_grad.then(|| {
                    TensorData::new(vec![T::from_f64(f64::NAN); scores.len()], [batch, n])
                });
                (TensorData::new(losses, [batch]), grad)
            }
            Err(e) => panic!("smooth-topk: {e}"),
        }
    }
    // f64 stays f64; every other float dtype is computed from f32 and converted back.
    let (losses, grad) = if dtype == DType::F64 {
        run::<f64>(data, &labels, n, loss, with_grad)
    } else {
        run::<f32>(data, &labels, n, loss, with_grad)
    };
    debug_assert_eq!(labels.len(), batch);
    let to_device = |d: TensorData| B::float_from_data(d.convert_dtype(dtype), &device);
    (to_device(losses), grad.map(to_device))
}

// The CPU backends: the provided methods (the numeric core on the host buffers).
impl TopkLossBackend for Flex {}
#[cfg(feature = "ndarray")]
impl TopkLossBackend for burn::backend::NdArray {}

/// Backward of `topk_loss`: scales each row of the saved per-sample gradient by the upstream
/// gradient of that sample's loss.
#[derive(Debug)]
struct TopkLossBackward;

impl<B: Backend> Backward<B, 1> for TopkLossBackward {
    /// The exact per-sample gradient `[batch, n]`, computed in the forward pass.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits_node] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        if let Some(node) = logits_node {
            let per_sample = ops.state;
            let shape = per_sample.shape();
            let column = B::float_reshape(upstream, Shape::new([shape[0], 1]));
            let scale = B::float_expand(column, shape);
            grads.register::<B>(node.id, B::float_mul(per_sample, scale));
        }
    }
}

impl<B: TopkLossBackend, C: CheckpointStrategy> TopkLossBackend for Autodiff<B, C> {
    fn topk_loss(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        loss: AnyLoss,
    ) -> FloatTensor<Self> {
        match TopkLossBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (losses, grad) = B::topk_loss_and_grad(logits.into_primitive(), targets, loss);
                prep.finish(grad, losses)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::topk_loss(logits.into_primitive(), targets, loss))
            }
        }
    }

    fn topk_loss_and_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        loss: AnyLoss,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Both outputs are plain values here (not tracked): this is the op's own building block.
        let (losses, grad) = B::topk_loss_and_grad(Self::inner(logits), targets, loss);
        (Self::from_inner(losses), Self::from_inner(grad))
    }
}
