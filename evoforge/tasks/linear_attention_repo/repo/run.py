"""Train the model with the recipe of train.py and config.yaml, then measure recall on held-out batches.

`python run.py SETTINGS_JSON` prints one JSON line: {"accuracy", "final_loss", "steps", "seconds"}. The budget
(steps, batch size, model size, task size) comes from the settings, never from config.yaml: a recipe may
change how the steps are spent, not how many there are."""

from __future__ import annotations

import json
import sys
import time

import torch
import yaml
from data import mqar_batch, vocab_size
from model import TinyLM
from train import train

BUDGET_KEYS = ("steps", "batch_size", "d_model", "n_layers", "n_heads", "num_pairs", "num_keys", "num_values")


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(int(settings.get("threads", 1)))
    torch.manual_seed(int(settings.get("seed", 0)))
    with open("config.yaml", encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    budget = {key: settings[key] for key in BUDGET_KEYS}
    model = TinyLM(vocab_size(budget["num_keys"], budget["num_values"]), budget["d_model"], budget["n_layers"],
                   budget["n_heads"])
    generator = torch.Generator().manual_seed(int(settings.get("seed", 0)))

    def batches():
        while True:
            yield mqar_batch(budget["batch_size"], budget["num_pairs"], budget["num_keys"], budget["num_values"],
                             generator)

    start = time.monotonic()
    final_loss = train(model, batches(), budget["steps"], recipe)
    seconds = time.monotonic() - start
    held_out = torch.Generator().manual_seed(int(settings["eval_seed"]))
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for _ in range(int(settings.get("eval_batches", 4))):
            inputs, targets = mqar_batch(64, budget["num_pairs"], budget["num_keys"], budget["num_values"], held_out)
            predictions = model(inputs).argmax(-1)
            mask = targets != -100
            correct += int((predictions[mask] == targets[mask]).sum())
            total += int(mask.sum())
    print(json.dumps({"accuracy": correct / total, "final_loss": float(final_loss), "steps": budget["steps"],
                      "seconds": seconds}))


if __name__ == "__main__":
    main()
