"""Distill a trained CNN into a 4x smaller student and ship it as LiteRT.

The story: a Keras 3 image classifier (the teacher) is trained. A much
smaller student learns from the labels and from the teacher with
`kc.distillation.Distiller`'s default recipe (the teacher's class ranking
and the features its classifier reads; `--alpha`/`--temperature` select the
keras.io soft-target loss instead), optionally pruned at the same time
(`--prune`). The trained `distiller.student` is stripped, converted to
LiteRT and checked against Keras on the test set, next to the same student
trained on the labels alone.

Run it (Fashion-MNIST from Debian's `dataset-fashion-mnist` if installed,
else scikit-learn's digits or synthetic images); the defaults take about a
minute on two CPU cores:

    python examples/distill_student.py
    python examples/distill_student.py --max-train 60000 --epochs 3 --prune
"""

import argparse

import keras

import keras_compress as kc
from keras_compress import demo
from keras_compress import distillation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--temperature",
        type=float,
        help="with --alpha: the keras.io loss (default: the default recipe)",
    )
    parser.add_argument("--alpha", type=float)
    parser.add_argument(
        "--prune",
        action="store_true",
        help="prune the student to 50 %% sparsity while distilling",
    )
    args = parser.parse_args()

    name, (x_train, y_train), (x_test, y_test) = kc.datasets.load_demo_data(
        max_train=args.max_train, max_test=2000
    )
    input_shape, num_classes = x_train.shape[1:], int(y_train.max()) + 1
    print(f"data: {name}, {len(x_train)} training images")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = {"batch_size": 128, "epochs": args.epochs, "verbose": 2}

    keras.utils.set_random_seed(0)
    teacher = demo.reference_cnn(input_shape, num_classes)
    teacher.compile("adam", loss, metrics=["accuracy"])
    teacher.fit(x_train, y_train, **fit)

    keras.utils.set_random_seed(1)
    alone = demo.student_cnn(input_shape, num_classes)
    initial_weights = alone.get_weights()
    alone.compile("adam", loss, metrics=["accuracy"])
    alone.fit(x_train, y_train, **fit)

    student = demo.student_cnn(input_shape, num_classes)
    student.set_weights(initial_weights)
    callbacks = []
    if args.prune:
        student = kc.pruning.prune_low_magnitude(
            student,
            pruning_schedule=kc.pruning.ConstantSparsity(0.5, 0, frequency=50),
        )
        callbacks.append(kc.pruning.UpdatePruningStep())
    # The teacher is frozen: compute its outputs once, not in every step.
    distiller = distillation.Distiller(
        student=student, teacher=teacher, cache_teacher_outputs=True
    )
    # No alpha or temperature (None): the default recipe (`distiller.recipe`).
    distiller.compile(
        optimizer="adam",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        student_loss_fn=loss,
        alpha=args.alpha,
        temperature=args.temperature,
    )
    print(f"distillation recipe: {distiller.recipe}")
    distiller.fit(x_train, y_train, callbacks=callbacks, **fit)

    # `distiller.student` is the trained model; strip it if it was pruned.
    trained = distiller.student
    if args.prune:
        trained = kc.pruning.strip_pruning(trained)
    blob = kc.convert.to_tflite(trained)
    print(
        f"\nteacher: {teacher.count_params():,} weights; student: "
        f"{trained.count_params():,} weights "
        f"({teacher.count_params() / trained.count_params():.0f}x fewer)"
    )
    for label, model in (("teacher", teacher), ("student alone", alone)):
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"{label:>18} test accuracy: {accuracy:.4f}")
    print("\ndistilled student, LiteRT file:")
    print(kc.convert.verify(trained, blob, x_test, y_test))


if __name__ == "__main__":
    main()
