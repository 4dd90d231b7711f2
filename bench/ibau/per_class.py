"""Per-class recall and predicted-class counts of CNN safetensors models on test images lo..hi.

    .venv/bin/python bench/ibau/per_class.py data/fashion-mnist 4000 5000 before.safetensors after.safetensors

With two models it also counts the images the second gets wrong that the first got right, by
true class and by the class now predicted. (The CNN of plugin/src/models.rs; images lo..hi of
the test file: 0..5000 is the defender's clean pool, 5000..10000 the evaluation half.)
"""
import sys, torch, numpy as np
sys.path.insert(0, 'bench/ibau')
from torch_ibau import Cnn, read_idx
from safetensors.torch import load_file
folder = sys.argv[1]
x = torch.from_numpy(read_idx(folder, "t10k-images-idx3-ubyte").copy()).float()/255.0
y = torch.from_numpy(read_idx(folder, "t10k-labels-idx1-ubyte").astype(np.int64))
lo, hi = int(sys.argv[2]), int(sys.argv[3])
x, y = x[lo:hi], y[lo:hi]
preds = []
for f in sys.argv[4:]:
    m = Cnn(); m.load_state_dict(load_file(f)); m.eval()
    with torch.no_grad(): p = m(x).argmax(-1)
    preds.append(p)
    print(f, "acc", (p==y).float().mean().item())
    print(" per-class recall", [round((p[y==c]==c).float().mean().item()*100,1) for c in range(10)])
    print(" predicted counts", torch.bincount(p, minlength=10).tolist())
if len(preds)==2:
    a,b=preds
    lost = (a==y)&(b!=y); gained=(a!=y)&(b==y)
    print("lost", lost.sum().item(), "gained", gained.sum().item())
    print("lost by true class", torch.bincount(y[lost],minlength=10).tolist())
    print("lost -> predicted", torch.bincount(b[lost],minlength=10).tolist())
