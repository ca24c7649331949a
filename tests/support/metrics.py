"""Reading Prometheus's text format back: one sample's value, by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``; None when absent."""
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return item.value
    return None


def value(text: str, name: str, **labels: str) -> float:
    """As ``sample``, 0 for a labelled counter that has not been touched yet."""
    found = sample(text, name, **labels)
    return 0.0 if found is None else found
