"""The README's training loop as a user writes it, timed from the process start.

Run as its own script (``python readme_loop.py '{"epochs": 1, ...}'``) by ``predcode bench
mlp`` (the ``user-loop`` row): pcx's MNIST MLP built with ``pc.Node`` markers,
``pc.InferenceLearning(pc.SGD(...), stop=8)``, ``torch.optim.AdamW(..., fused=True)``, the batches of
``predcode.data.loaders``, ``rule.step(graph, x, y, opt)``; no other flag.  Prints one JSON
line prefixed ``USER_LOOP`` with the seconds from the process start to the end of the
imports and of the first step, the step times, the first epoch's wall time and the test
accuracy after each epoch.
"""

import time

START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import predcode as pc  # noqa: E402
from predcode.data import loaders  # noqa: E402

IMPORTED = time.perf_counter()


def main(spec: dict) -> dict:
    torch.manual_seed(spec.get("seed", 0))
    act = lambda: nn.GELU(approximate="tanh")  # noqa: E731
    model = nn.Sequential(  # pcx's MNIST MLP, a Node after every layer
        nn.Linear(784, 128),
        act(),
        pc.Node(),
        nn.Linear(128, 128),
        act(),
        pc.Node(),
        nn.Linear(128, 128),
        act(),
        pc.Node(),
        nn.Linear(128, 10),
        pc.Node("se"),
    )
    graph = pc.PCGraph(model)
    rule = pc.InferenceLearning(pc.SGD(lr=0.010535, momentum=0.65), stop=8)
    opt = torch.optim.AdamW(model.parameters(), lr=2.969e-4, weight_decay=3.55e-4, fused=True)
    train, test = loaders("mnist", batch_size=128, seed=spec.get("seed", 0))
    steps, epochs, first_step, first_epoch = [], [], None, None
    loop_start = time.perf_counter()
    for epoch in range(spec.get("epochs", 1)):
        for x, y in train:
            t0 = time.perf_counter()
            rule.step(graph, x, y, opt)
            t1 = time.perf_counter()
            steps.append(t1 - t0)
            if first_step is None:
                first_step = t1 - START
        if first_epoch is None:
            first_epoch = time.perf_counter() - loop_start
        with torch.no_grad():
            correct = sum(int((model(x).argmax(-1) == y).sum()) for x, y in test)
        # torch types DataLoader.dataset as a Dataset, which declares no __len__ (this one, a TensorDataset, has one)
        n_test = len(test.dataset)  # type: ignore[arg-type]
        epochs.append({"epoch": epoch + 1, "test_acc": correct / n_test, "wall_s": time.perf_counter() - loop_start})
    return {
        "import_s": IMPORTED - START,
        "first_step_from_start_s": first_step,
        "first_step_s": steps[0],
        "step_times_s": steps,
        "first_epoch_s": first_epoch,
        "batches_per_epoch": len(train),
        "epochs": epochs,
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    spec = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    print("USER_LOOP " + json.dumps(main(spec)), flush=True)
