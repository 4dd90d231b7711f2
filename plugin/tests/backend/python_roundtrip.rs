//! Model I/O both ways with Python PyTorch (the project venv's python): safetensors state dicts
//! and TorchScript, compared bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;

use ibau_plugin::model_io::{load_safetensors, load_torchscript, save_safetensors};
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(p.exists(), "{} missing: run scripts/setup", p.display());
    p
}

fn run_python(script: &str, dir: &Path) {
    // From a file, not `-c`: TorchScript needs the class's source.
    let file = dir.join("script.py");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(python())
        .arg(&file)
        .current_dir(dir)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same architecture as the Python `Net` below: fc1 (5→7), tanh, fc2 (7→3).
fn net(vs: &nn::Path<'_>) -> impl Module {
    nn::seq()
        .add(nn::linear(vs / "fc1", 5, 7, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(vs / "fc2", 7, 3, Default::default()))
}

const PY_NET: &str = r#"
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 3)
    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))
"#;

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ibau-py-roundtrip-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn read(path: &Path, name: &str) -> Tensor {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

fn bit_equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.kind() == b.kind() && a.eq_tensor(b).all().int64_value(&[]) == 1
}

#[test]
fn safetensors_and_torchscript_round_trip_with_python() {
    let dir = tempdir();
    // Python → Rust: a state dict, a TorchScript module, an input and Python's outputs.
    run_python(
        &format!(
            "{PY_NET}
from safetensors.torch import save_file
torch.manual_seed(0)
m = Net().eval()
x = torch.randn(11, 5)
save_file(m.state_dict(), 'py_model.safetensors')
torch.jit.script(m).save('py_model.pt')
with torch.no_grad():
    save_file({{'x': x, 'y': m(x)}}, 'py_io.safetensors')
"
        ),
        &dir,
    );
    let x = read(&dir.join("py_io.safetensors"), "x");
    let y_py = read(&dir.join("py_io.safetensors"), "y");

    let mut vs = VarStore::new(Device::Cpu);
    let model = net(&vs.root());
    load_safetensors(&mut vs, &dir.join("py_model.safetensors")).unwrap();
    let y_rs = tch::no_grad(|| model.forward(&x));
    assert!(
        bit_equal(&y_rs, &y_py),
        "safetensors model output differs from Python's: max diff {}",
        (&y_rs - &y_py).abs().max().double_value(&[])
    );

    // TorchScript: inference, and its parameters are registered and trainable for unlearning.
    let ts_vs = VarStore::new(Device::Cpu);
    let ts = load_torchscript(&ts_vs, &dir.join("py_model.pt")).unwrap();
    let y_ts = tch::no_grad(|| ts.forward_ts(&[&x]).unwrap());
    assert!(
        bit_equal(&y_ts, &y_py),
        "TorchScript output differs from Python's"
    );
    let vars = ts_vs.trainable_variables();
    assert_eq!(vars.len(), 4, "fc1/fc2 weight and bias must be reachable");
    let loss = ts.forward_ts(&[&x]).unwrap().square().sum(Kind::Float);
    loss.backward();
    assert!(
        vars.iter().all(|v| v.grad().defined()),
        "every TorchScript parameter gets a gradient"
    );

    // Rust → Python: change the weights, save, and let Python reproduce our outputs.
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let _ = v.f_mul_scalar_(0.5).unwrap();
        }
    });
    let y_rs2 = tch::no_grad(|| model.forward(&x));
    save_safetensors(&vs, &dir.join("rs_model.safetensors")).unwrap();
    run_python(
        &format!(
            "{PY_NET}
from safetensors.torch import load_file, save_file
m = Net().eval()
m.load_state_dict(load_file('rs_model.safetensors'))
x = load_file('py_io.safetensors')['x']
with torch.no_grad():
    save_file({{'y': m(x)}}, 'py_from_rs.safetensors')
"
        ),
        &dir,
    );
    let y_back = read(&dir.join("py_from_rs.safetensors"), "y");
    assert!(
        bit_equal(&y_rs2, &y_back),
        "Python's output on our saved model differs from ours"
    );

    // A file with the wrong names is a clear error.
    let mut other = VarStore::new(Device::Cpu);
    let _ = nn::linear(other.root() / "head", 5, 3, Default::default());
    let err = load_safetensors(&mut other, &dir.join("py_model.safetensors")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
