"""Knowledge distillation for Keras 3: a `Distiller` model and its losses.

`Distiller(student, teacher)` trains the student on labels and on the
teacher's softened predictions (T² · KL, `SoftTargetKLDivergence`), with the
keras.io `compile(optimizer, metrics, student_loss_fn, distillation_loss_fn,
alpha, temperature)` arguments, optional `FeatureDistillation` terms, and
any student: pruned, mixed precision, under `tf.distribute`.

Example:

```python
import keras_compress as kc

distiller = kc.distillation.Distiller(student=student, teacher=teacher)
distiller.compile(
    optimizer="adam",
    metrics=["accuracy"],
    student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True),
    alpha=0.1,
    temperature=3,
)
distiller.fit(x_train, y_train, epochs=3)
distiller.student.save("student.keras")
```
"""

from keras_compress.distillation.distiller import Distiller
from keras_compress.distillation.features import FeatureDistillation
from keras_compress.distillation.losses import SoftTargetKLDivergence
from keras_compress.distillation.losses import soft_target_kl_divergence

__all__ = [
    "Distiller",
    "FeatureDistillation",
    "SoftTargetKLDivergence",
    "soft_target_kl_divergence",
]
