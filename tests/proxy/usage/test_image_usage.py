"""Image endpoints: an image model's unsplit output tokens are image tokens (priced at image rates)."""

from __future__ import annotations

from proxy.usage.extract import image_usage


def test_unsplit_output_of_an_image_model_counts_as_image_tokens() -> None:
    usage = image_usage(
        {
            "input_tokens": 50,
            "output_tokens": 4160,
            "total_tokens": 4210,
            "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
        }
    )
    assert usage.output_tokens == 4160
    assert usage.image_output_tokens == 4160
    assert usage.image_input_tokens == 10


def test_a_reported_split_is_kept_as_reported() -> None:
    usage = image_usage(
        {
            "input_tokens": 50,
            "output_tokens": 4200,
            "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
            "output_tokens_details": {"text_tokens": 40, "image_tokens": 4160},
        }
    )
    assert usage.output_tokens == 4200
    assert usage.image_output_tokens == 4160
