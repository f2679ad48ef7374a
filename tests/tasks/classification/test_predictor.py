"""The classification task's model choice: the scratch Transformer with the head of the run's task."""

from ragtune.models.transformer import TransformerConfig, TransformerForRegression, TransformerForSequenceClassification
from ragtune.tasks.classification.predictor import scratch_model


def test_scratch_model_picks_the_head_of_the_task():
    config = TransformerConfig(vocab_size=50, max_length=16, d_model=32, heads=2, head_dim=16, layers=1, ffn_dim=64,
                               num_outputs=3)
    classifier = scratch_model(config, "classification")
    assert isinstance(classifier, TransformerForSequenceClassification) and classifier.head.out_features == 3
    assert isinstance(scratch_model(config, "regression"), TransformerForRegression)
