//! End to end on real MNIST images: poison → train → unlearn → evaluate, in seconds.
//!
//! A small CNN is trained on 6 000 training images with 10 % BadNets poisoning, which implants the
//! backdoor; I-BAU then unlearns it with 500 images of the defender's clean pool, and the
//! attack success rate on the held-out evaluation half must drop. Needs `scripts/setup` (data).

use ibau_plugin::attacks::{Attack, AttackKind};
use ibau_plugin::data::{self, DatasetName};
use ibau_plugin::ibau::{unlearn, Candidate, Method, UnlearnConfig};
use ibau_plugin::models::{Arch, Model};
use ibau_plugin::train::{self, TrainConfig};
use tch::Device;

#[test]
fn poison_train_unlearn_evaluate_on_real_mnist() {
    let d = data::load(DatasetName::Mnist, &data::default_root())
        .expect("MNIST under data/ (run scripts/setup)");
    let attack = Attack::new(AttackKind::Badnets, 0, 0.1).unwrap();
    let train_subset = d.train.slice(0, 6000).unwrap();
    let (poisoned, k) = attack.poison(&train_subset, 0).unwrap();
    assert_eq!(k, 600);
    tch::manual_seed(0);
    let model = Model::new(Arch::Cnn, Device::Cpu);
    let tc = TrainConfig {
        epochs: 2,
        batch_size: 64,
        lr: 2e-3,
        seed: 0,
    };
    train::train(&model, &poisoned, &tc, |_, _, _, _| {}).unwrap();
    let eval = d.eval.slice(0, 2000).unwrap();
    let before = train::evaluate(&model, &eval, &attack).unwrap();
    assert!(before.acc >= 0.90, "poisoned model accuracy {}", before.acc);
    assert!(
        before.asr >= 0.80,
        "the backdoor was not implanted: ASR {}",
        before.asr
    );

    let clean = d.clean_pool.slice(0, 500).unwrap();
    let cfg = UnlearnConfig {
        method: Method::Ibau,
        ..UnlearnConfig::tuned(500)
    };
    let summary = unlearn(&model, &clean, &cfg, None, &mut ()).unwrap();
    let after = train::evaluate(&model, &eval, &attack).unwrap();
    println!("before: {before:?}\nafter: {after:?}\n{summary:?}");
    assert!(summary.steps >= 100);
    // Every I-BAU step reports how far δ is from Φ's fixed point (finite, non-negative).
    assert_eq!(summary.fixed_point_residuals.len(), summary.steps);
    assert!(summary
        .fixed_point_residuals
        .iter()
        .all(|r| *r >= 0.0 && r.is_finite()));
    // The search names the backdoor's target class.
    assert_eq!(summary.searches.len(), 1);
    assert_eq!(summary.searches[0][0].candidate, Candidate::Class(0));
    assert!(after.asr <= 0.2, "ASR {} → {}", before.asr, after.asr);
    assert!(
        after.acc >= before.acc - 0.05,
        "ACC {} → {}",
        before.acc,
        after.acc
    );
}
