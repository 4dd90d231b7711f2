use ibau_core::conformance::check_vector;
use ibau_plugin::TensorList;
use tch::{Device, Kind, Tensor};

/// Splits `xs` over three tensors of different ranks, so list handling is exercised too.
fn from(xs: &[f64], kind: Kind, device: Device) -> TensorList {
    let n = xs.len();
    let a = n / 3;
    let rest = n - a;
    let (rows, cols) = if rest.is_multiple_of(2) && rest > 0 {
        (2, rest / 2)
    } else {
        (1, rest)
    };
    let t1 = Tensor::from_slice(&xs[..a]).to_kind(kind).to_device(device);
    let t2 = Tensor::from_slice(&xs[a..])
        .reshape([rows as i64, cols as i64])
        .to_kind(kind)
        .to_device(device);
    let t3 = Tensor::zeros([0], (kind, device));
    TensorList::new(vec![t1, t2, t3])
}

fn to(v: &TensorList) -> Vec<f64> {
    v.to_f64_vec().unwrap()
}

#[test]
fn tensor_list_f64_cpu_conforms() {
    check_vector(|xs| from(xs, Kind::Double, Device::Cpu), to, 1e-14);
}

#[test]
fn tensor_list_f32_cpu_conforms() {
    // f32 storage, f64 accumulation: the reference is computed on the stored values.
    check_vector(|xs| from(xs, Kind::Float, Device::Cpu), to, 1e-12);
}

#[test]
fn tensor_list_cuda_conforms() {
    if let Some(dev) = crate::cuda_or_notice("tensor_list_cuda_conforms") {
        check_vector(|xs| from(xs, Kind::Double, dev), to, 1e-13);
        check_vector(|xs| from(xs, Kind::Float, dev), to, 1e-12);
    }
}
