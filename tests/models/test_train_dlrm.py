"""Training: it learns a learnable toy day, is bit-reproducible, and warm-starts."""

from __future__ import annotations

import pytest
import torch

from quantrec.models.dlrm import DLRM
from quantrec.models.quantize import quantize_int8
from quantrec.models.scorer import score
from quantrec.models.train import TrainReport, train_dlrm, warm_start

FAST = dict(epochs=3, batch_size=64, learning_rate=0.02)


def test_training_reduces_loss_and_beats_the_click_rate(make_model, make_batch) -> None:
    model, batch = make_model(seed=0), make_batch(rows=2048, seed=0)
    report = train_dlrm(model, batch, seed=0, **FAST)

    assert isinstance(report, TrainReport)
    assert report.steps == 3 * 32 and report.samples == 3 * 2048
    assert report.samples_per_s > 0 and report.seconds > 0
    assert report.final_loss == report.epoch_losses[-1]
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert not model.training
    # Held-out day from the same generator: the user/item signal generalises.
    held_out = score(model, make_batch(rows=2048, seed=1))
    assert held_out.ne < 0.9, held_out
    assert held_out.auc > 0.7, held_out


def test_same_seed_data_and_init_give_bit_identical_weights(make_model, make_batch) -> None:
    batch = make_batch(rows=512)
    first, second = make_model(seed=5), make_model(seed=5)
    report_a = train_dlrm(first, batch, seed=11, **FAST)
    report_b = train_dlrm(second, batch, seed=11, **FAST)
    assert report_a.epoch_losses == report_b.epoch_losses
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name

    third = make_model(seed=5)
    train_dlrm(third, batch, seed=12, **FAST)
    assert not torch.equal(third.over_arch.mlp[0].weight, first.over_arch.mlp[0].weight)


def test_embeddings_get_sparse_updates_only_on_seen_rows(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch(rows=64)
    table = model.sparse_arch.embedding_bags[0].weight
    before = table.detach().clone()
    train_dlrm(model, batch, epochs=1, batch_size=64, learning_rate=0.01, seed=0)
    changed = (table.detach() != before).any(dim=1)
    seen = torch.zeros(table.shape[0], dtype=torch.bool)
    seen[batch.sparse.values[0]] = True
    assert torch.equal(changed, seen)


def test_last_partial_slice_is_trained_on(make_model, make_batch) -> None:
    report = train_dlrm(
        make_model(), make_batch(rows=100), epochs=2, batch_size=64, learning_rate=0.01, seed=0
    )
    assert report.steps == 4 and report.samples == 200


@pytest.mark.parametrize("change", [{"epochs": 0}, {"batch_size": 0}, {"learning_rate": 0.0}])
def test_bad_training_arguments_are_rejected(make_model, make_batch, change) -> None:
    with pytest.raises(ValueError, match="epochs=.*batch_size=.*learning_rate="):
        train_dlrm(make_model(), make_batch(rows=8), seed=0, **{**FAST, **change})


def test_empty_batch_is_rejected(make_model, make_batch) -> None:
    with pytest.raises(ValueError, match="0 rows"):
        train_dlrm(make_model(), make_batch(rows=8).slice(0, 0), seed=0, **FAST)


def test_warm_start_copies_matching_shapes_only(make_model) -> None:
    champion = make_model(seed=1)
    challenger = DLRM(
        **{**champion.architecture(), "table_sizes": [97, 61, 48]}
    )  # hour table resized
    copied = warm_start(challenger, champion)

    assert "sparse_arch.embedding_bags.0.weight" in copied
    assert "sparse_arch.embedding_bags.2.weight" not in copied
    assert torch.equal(challenger.over_arch.mlp[0].weight, champion.over_arch.mlp[0].weight)
    assert challenger.sparse_arch.embedding_bags[2].weight.shape == (48, 4)


def test_warm_start_from_an_int8_champion_dequantizes(make_model) -> None:
    champion = make_model(seed=2)
    challenger = make_model(seed=3)
    copied = warm_start(challenger, quantize_int8(champion))
    assert len(copied) == len(champion.state_dict())
    for name in ("sparse_arch.embedding_bags.0.weight", "dense_arch.mlp.0.weight"):
        torch.testing.assert_close(
            challenger.get_parameter(name), champion.get_parameter(name), atol=0.01, rtol=0
        )


def test_torch_threads_sets_and_restores():
    from quantrec.models.train import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with torch_threads(0):
            pass


@pytest.mark.parametrize("sparse_optimizer", ["rowwise_adagrad", "sparse_adam"])
def test_fused_and_per_table_training_agree(make_model, make_batch, sparse_optimizer) -> None:
    batch = make_batch(rows=256)
    fused, per_table = make_model(seed=4), make_model(seed=4)
    kwargs = dict(seed=3, sparse_optimizer=sparse_optimizer, **FAST)
    report_fused = train_dlrm(fused, batch, fused=True, **kwargs)
    report_table = train_dlrm(per_table, batch, fused=False, **kwargs)
    assert report_fused.steps == report_table.steps == 12
    # Same maths, different summation order of duplicate-id gradients: equal to rounding.
    for (name, a), (_, b) in zip(fused.state_dict().items(), per_table.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_sparse_learning_rate_defaults_per_optimizer(make_model, make_batch) -> None:
    from quantrec.models.train import DEFAULT_ROWWISE_ADAGRAD_LR

    batch = make_batch(rows=128)
    default, explicit = make_model(seed=1), make_model(seed=1)
    train_dlrm(default, batch, seed=0, **FAST)
    train_dlrm(explicit, batch, seed=0, sparse_learning_rate=DEFAULT_ROWWISE_ADAGRAD_LR, **FAST)
    assert torch.equal(
        default.sparse_arch.embedding_bags[0].weight, explicit.sparse_arch.embedding_bags[0].weight
    )
    adam_default, adam_explicit = make_model(seed=1), make_model(seed=1)
    train_dlrm(adam_default, batch, seed=0, sparse_optimizer="sparse_adam", **FAST)
    train_dlrm(
        adam_explicit,
        batch,
        seed=0,
        sparse_optimizer="sparse_adam",
        sparse_learning_rate=FAST["learning_rate"],
        **FAST,
    )
    assert torch.equal(
        adam_default.sparse_arch.embedding_bags[0].weight,
        adam_explicit.sparse_arch.embedding_bags[0].weight,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sparse_optimizer": "adagrad"}, "sparse_optimizer must be one of .* got 'adagrad'"),
        ({"sparse_learning_rate": 0.0}, "sparse_learning_rate must be > 0 or None, got 0.0"),
    ],
)
def test_bad_sparse_optimizer_arguments_are_rejected(make_model, make_batch, change, message):
    with pytest.raises(ValueError, match=message):
        train_dlrm(make_model(), make_batch(rows=8), seed=0, **FAST, **change)


def test_keys_in_another_order_are_rejected_on_the_fused_path(make_model, make_batch) -> None:
    from quantrec.models.batch import Batch, KeyedJaggedIds

    batch = make_batch(rows=16)
    swapped = KeyedJaggedIds(
        keys=batch.sparse.keys[::-1],
        values=batch.sparse.values[::-1],
        offsets=batch.sparse.offsets[::-1],
    )
    model = make_model()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(ValueError, match="differ from the model's feature_names"):
        train_dlrm(model, Batch(batch.dense, swapped, batch.labels), seed=0, **FAST)
    for name, tensor in model.state_dict().items():  # written back untouched
        assert torch.equal(tensor, before[name]), name


def test_something_else_than_a_batch_or_source_is_rejected(make_model) -> None:
    with pytest.raises(TypeError, match="Batch or a BatchSource.*got list"):
        train_dlrm(make_model(), [1, 2], seed=0, **FAST)


def _legacy_train(model, batch, *, epochs, batch_size, learning_rate, seed) -> None:
    """train_dlrm before fused tables existed (SparseAdam + Adam, per-table lookups)."""
    sparse = [
        p for m in model.modules() if isinstance(m, torch.nn.EmbeddingBag) for p in m.parameters()
    ]
    dense = [p for p in model.parameters() if all(p is not q for q in sparse)]
    optimizers = [
        torch.optim.SparseAdam(sparse, lr=learning_rate),
        torch.optim.Adam(dense, lr=learning_rate),
    ]
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        shuffled = batch.take(torch.randperm(len(batch), generator=generator))
        for start in range(0, len(batch), batch_size):
            part = shuffled.slice(start, start + batch_size)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.binary_cross_entropy_with_logits(
                model(part), part.labels
            ).backward()
            for optimizer in optimizers:
                optimizer.step()


def test_per_table_sparse_adam_reproduces_the_previous_trainer_bit_for_bit(
    make_model, make_batch
) -> None:
    batch = make_batch(rows=300)
    legacy, current = make_model(seed=2), make_model(seed=2)
    _legacy_train(legacy, batch, seed=4, **FAST)
    train_dlrm(
        current,
        batch,
        seed=4,
        sparse_optimizer="sparse_adam",
        fused=False,
        dense_transform="keep",
        **FAST,
    )
    for (name, a), (_, b) in zip(legacy.state_dict().items(), current.state_dict().items()):
        assert torch.equal(a, b), name


# --- sizes from the rows, early stopping, the dense transform, continued training ---------


def test_sizes_follow_the_rows_when_not_given(make_model, make_batch) -> None:
    from quantrec.models.sizing import auto_batch_size, auto_learning_rate

    batch = make_batch(rows=2000)
    report = train_dlrm(make_model(), batch, seed=0, epochs=2)
    assert report.batch_size == auto_batch_size(2000) == 64
    assert report.learning_rate == pytest.approx(auto_learning_rate(64))
    assert report.steps == 2 * 32  # not 2 steps of 1024


def test_early_stopping_keeps_the_best_epoch_bit_for_bit(make_model, make_batch) -> None:
    # 192 rows and a wide model overfit quickly: the held-out loss turns up within 8 epochs.
    batch, held_out = make_batch(rows=192, seed=0), make_batch(rows=512, seed=1)
    kwargs = dict(seed=3, batch_size=16, learning_rate=0.02, sparse_learning_rate=0.2)
    model = make_model(seed=1, embedding_dim=8)
    report = train_dlrm(model, batch, validation=held_out, max_epochs=8, patience=1, **kwargs)

    assert 1 <= report.best_epoch < report.epochs <= 8
    assert len(report.validation_losses) == report.epochs + 1  # before training, then per epoch
    losses = report.validation_losses
    assert losses[report.best_epoch] == min(losses[1:])
    assert "not better than epoch" in report.stop_reason
    # The kept weights are those a fixed run of best_epoch epochs ends with.
    fixed = make_model(seed=1, embedding_dim=8)
    train_dlrm(fixed, batch, epochs=report.best_epoch, **kwargs)
    for (name, a), (_, b) in zip(model.state_dict().items(), fixed.state_dict().items()):
        assert torch.equal(a, b), name


def test_early_stopped_runs_are_bit_reproducible(make_model, make_batch) -> None:
    batch, held_out = make_batch(rows=1000, seed=0), make_batch(rows=300, seed=1)
    first, second = make_model(seed=2), make_model(seed=2)
    report_a = train_dlrm(first, batch, seed=5, validation=held_out)
    report_b = train_dlrm(second, batch, seed=5, validation=held_out)
    assert report_a.validation_losses == report_b.validation_losses
    assert report_a.best_epoch == report_b.best_epoch
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_without_validation_rows_one_epoch(make_model, make_batch) -> None:
    report = train_dlrm(make_model(), make_batch(rows=300), seed=0)
    assert report.epochs == 1 and report.validation_losses == ()


def test_the_dense_transform_is_fitted_on_the_training_rows_or_kept(make_model, make_batch):
    batch = make_batch(rows=500)
    model = make_model()
    train_dlrm(model, batch, seed=0, epochs=1)
    transform = model.dense_arch.transform
    torch.testing.assert_close(transform.shift, batch.dense.double().mean(0).float())
    kept = make_model()
    train_dlrm(kept, batch, seed=0, epochs=1, dense_transform="keep")
    assert torch.equal(kept.dense_arch.transform.shift, torch.zeros(2))


def test_a_continued_run_keeps_a_trained_epoch_and_its_transform(make_model, make_batch):
    from quantrec.models.batch import Batch

    batch = make_batch(rows=600, seed=0)
    flipped = make_batch(rows=300, seed=1)
    flipped = Batch(flipped.dense, flipped.sparse, 1.0 - flipped.labels)  # the opposite world
    model = make_model(seed=4)
    train_dlrm(model, batch, seed=0, epochs=2)
    start = {n: t.clone() for n, t in model.state_dict().items()}

    report = train_dlrm(model, batch, seed=1, validation=flipped, continued=True)
    # Training only hurts on these held-out rows, yet the new rows are learned from: one
    # epoch is kept (the gate, not training, decides whether it beats the champion).
    assert report.best_epoch == 1 and report.validation_losses[1] > report.validation_losses[0]
    assert not torch.equal(model.over_arch.mlp[0].weight, start["over_arch.mlp.0.weight"])
    assert torch.equal(model.dense_arch.transform.shift, start["dense_arch.transform.shift"])


def test_warm_start_then_continue_on_new_days(make_model, make_batch) -> None:
    """The champion's parent continues: equal weights after warm_start, then training on the
    new days moves them and lowers NE on those days' distribution."""
    source = make_model(seed=1)
    train_dlrm(source, make_batch(rows=300, seed=0), seed=0, **FAST)
    challenger = make_model(seed=9)
    copied = warm_start(challenger, source)
    assert len(copied) == len(source.state_dict())
    for (name, a), (_, b) in zip(source.state_dict().items(), challenger.state_dict().items()):
        assert torch.equal(a, b), name  # 0 steps: the source's weights, transform included

    new_days, held_out = make_batch(rows=4000, seed=2), make_batch(rows=500, seed=3)
    # FAST's rates, scaled down because the run continues (CONTINUED_LEARNING_RATE_SCALE).
    report = train_dlrm(
        challenger,
        new_days,
        seed=0,
        validation=held_out,
        continued=True,
        batch_size=64,
        learning_rate=0.02,
        sparse_learning_rate=0.5,
    )
    assert report.best_epoch >= 1
    assert torch.equal(
        challenger.dense_arch.transform.shift, source.dense_arch.transform.shift
    )  # kept: the MLPs learned on it
    assert not torch.equal(challenger.over_arch.mlp[0].weight, source.over_arch.mlp[0].weight)
    test_day = make_batch(rows=3000, seed=4)
    before, after = score(source, test_day), score(challenger, test_day)
    assert after.ne < before.ne - 0.01, (before, after)


def test_training_streams_a_window_of_day_files(make_model, make_frame, tiny_schema, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quantrec.models.batch import batch_from_frame
    from quantrec.models.stream import WindowStream

    paths, frames = [], [make_frame(rows=700, seed=s) for s in (0, 1)]
    for day, frame in enumerate(frames):
        paths.append(tmp_path / f"day={day}.parquet")
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False), paths[-1], row_group_size=256
        )
    held_out = batch_from_frame(make_frame(rows=300, seed=5), tiny_schema)
    model = make_model()
    report = train_dlrm(model, WindowStream(paths, tiny_schema), seed=0, validation=held_out)
    assert report.samples == report.epochs * 1400
    import pandas as pd

    whole = batch_from_frame(pd.concat(frames, ignore_index=True), tiny_schema)
    torch.testing.assert_close(model.dense_arch.transform.shift, whole.dense.mean(0))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_epochs": 0}, "max_epochs >= 1 and patience >= 1"),
        ({"patience": 0}, "max_epochs >= 1 and patience >= 1"),
        ({"dense_transform": "refit"}, "dense_transform must be 'fit' or 'keep'"),
        ({"embedding_weight_decay": 0.1, "sparse_optimizer": "sparse_adam"}, "needs rowwise"),
    ],
)
def test_bad_stopping_arguments_are_rejected(make_model, make_batch, change, message) -> None:
    with pytest.raises(ValueError, match=message):
        train_dlrm(make_model(), make_batch(rows=8), seed=0, **change)


# --- resumed optimizers: a model line trained as one long pass ------------------------------


def test_a_resumed_run_continues_as_if_training_never_stopped(
    make_model, make_batch, tiny_schema, tmp_path
):
    """Day A, the fp32 artifact saved and loaded, then day B resumed from its optimizer state:
    the same weights, bit for bit, as one trainer that ran over A then B without stopping."""
    from quantrec.models.artifact import load_model, save_model
    from quantrec.models.fused import FusedTrainer
    from quantrec.models.sizing import auto_training_size
    from quantrec.models.stream import InMemorySource
    from quantrec.models.train import _run_epochs

    day_a, day_b = make_batch(rows=700, seed=0), make_batch(rows=500, seed=1)
    rates = dict(batch_size=64, learning_rate=0.01, sparse_learning_rate=0.2)

    parent = make_model(seed=3)
    first = train_dlrm(parent, day_a, seed=0, epochs=1, **rates)
    assert not first.resumed and parent.optimizer_state is not None
    save_model(parent, tmp_path / "fp32", schema=tiny_schema, precision="fp32")
    loaded = load_model(tmp_path / "fp32").model
    child = make_model(seed=8)
    warm_start(child, loaded)
    report = train_dlrm(
        child, day_b, seed=1, continued=True, optimizer_state=loaded.optimizer_state, **rates
    )
    assert report.resumed and report.epochs == 1
    assert report.learning_rate == rates["learning_rate"]  # not scaled down: resumed

    straight = make_model(seed=3)
    straight.dense_arch.transform.fit([day_a.dense])
    size = auto_training_size(len(day_a), batch_size=64, learning_rate=0.01)
    trainer = FusedTrainer(
        straight,
        size,
        sparse_optimizer="rowwise_adagrad",
        sparse_learning_rate=0.2,
        weight_decay=0.0,
    )
    for seed, day in ((0, day_a), (1, day_b)):
        _run_epochs(
            trainer,
            InMemorySource(day),
            seed=seed,
            validation=None,
            epochs=1,
            max_epochs=1,
            patience=1,
            batch_size=64,
        )
    trainer.finish()
    for name, tensor in straight.state_dict().items():
        assert torch.equal(child.state_dict()[name], tensor), name


def test_only_the_fp32_artifact_keeps_the_optimizer_state(
    make_model, make_batch, tiny_schema, tmp_path
):
    from quantrec.models.artifact import OPTIMIZER_FILE, load_model, save_model

    model = make_model(seed=0)
    train_dlrm(model, make_batch(rows=300, seed=0), seed=0, epochs=1)
    save_model(model, tmp_path / "fp32", schema=tiny_schema, precision="fp32")
    save_model(quantize_int8(model), tmp_path / "int8", schema=tiny_schema, precision="int8")
    assert (tmp_path / "fp32" / OPTIMIZER_FILE).is_file()
    assert not (tmp_path / "int8" / OPTIMIZER_FILE).exists()
    state = load_model(tmp_path / "fp32").model.optimizer_state
    assert torch.equal(
        state["rowwise_adagrad"]["accumulator"],
        model.optimizer_state["rowwise_adagrad"]["accumulator"],
    )


def test_an_optimizer_state_of_another_architecture_is_refused(make_model, make_batch):
    other = make_model(seed=0, embedding_dim=8)
    train_dlrm(other, make_batch(rows=300, seed=0), seed=0, epochs=1)
    model = make_model(seed=1)
    with pytest.raises(ValueError, match="row-wise Adagrad state has|another architecture"):
        train_dlrm(
            model,
            make_batch(rows=300, seed=1),
            seed=0,
            continued=True,
            optimizer_state=other.optimizer_state,
        )
    with pytest.raises(ValueError, match="resumes a continued run"):
        train_dlrm(model, make_batch(rows=300, seed=1), seed=0, optimizer_state={})


def test_the_kept_epoch_keeps_its_own_optimizer_state(make_model, make_batch):
    """Early stopping that keeps epoch 1 of 2 saves the optimizers as they were after
    epoch 1: a continued run resumes from the weights it continues, not from later steps."""
    from quantrec.models.batch import Batch

    batch = make_batch(rows=640, seed=0)
    flipped = make_batch(rows=300, seed=1)
    flipped = Batch(flipped.dense, flipped.sparse, 1.0 - flipped.labels)  # only hurts
    model = make_model(seed=2)
    report = train_dlrm(model, batch, seed=0, validation=flipped, batch_size=64, max_epochs=3)
    assert report.best_epoch == 1 and report.epochs == 2
    state = model.optimizer_state
    assert int(state["rowwise_adagrad"]["steps"]) == 640 // 64  # one epoch's steps
    assert all(int(s["step"]) == 640 // 64 for s in state["adam"]["state"].values())
