"""What a SageMaker training job costs: a list-price table and the estimate shown on every GPU step.

The table holds on-demand list prices in USD per instance-hour for SageMaker *training* in us-east-1, from the
SageMaker pricing page (aws.amazon.com/sagemaker/pricing, On-Demand, Training), recorded in November 2026 when the
table was written; this project's build machines cannot reach AWS, so the figures are not re-checked automatically.
Prices differ by region and change: a deployment overrides them with the `prices_usd_per_hour` field of the
`sagemaker` resource, and each estimate names the table it used.
Spot jobs are billed at a discount SageMaker does not report, so for them the estimate is an upper bound.
"""

from __future__ import annotations

from typing import Any

PRICE_SOURCE = "on-demand list price, SageMaker training, us-east-1, recorded 2026-11"
LIST_PRICES_USD_PER_HOUR = {
    "ml.p4d.24xlarge": 37.688,
    "ml.p4de.24xlarge": 47.11,
    "ml.p5.48xlarge": 113.07,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.48xlarge": 20.36,
    "ml.m5.xlarge": 0.23,
}


def estimate_cost(description: dict[str, Any], prices: dict[str, float]) -> dict[str, Any]:
    """Billable and training seconds, the spot saving and the cost at `prices` of a finished job's description.

    SageMaker bills `BillableTimeInSeconds` per instance; with managed spot it is below the training time, and
    the saving is the share not billed. The price is per instance-hour at on-demand rates (spot is billed at a
    discount SageMaker does not report, so the estimate is an upper bound for spot jobs).
    """
    resources = description["ResourceConfig"]
    instance_type, count = resources["InstanceType"], int(resources.get("InstanceCount", 1))
    training = int(description.get("TrainingTimeInSeconds") or 0)
    billable = int(description.get("BillableTimeInSeconds") or training)
    price = prices.get(instance_type)
    return {
        "instance_type": instance_type,
        "instance_count": count,
        "training_seconds": training,
        "billable_seconds": billable,
        "spot_savings": (1 - billable / training) if training else 0.0,
        "price_usd_per_instance_hour": price,
        "estimated_cost_usd": None if price is None else billable / 3600 * price * count,
    }
