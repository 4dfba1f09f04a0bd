"""FOCUS 1.2 (FinOps Open Cost and Usage Specification) columns, as this export fills them.

Column list: the FOCUS 1.2 specification's cost-and-usage columns
(https://focus.finops.org/focus-specification/v1-2/ and the FOCUS_Spec repository,
``specification/columns/``), in the specification's (alphabetical) order, then our ``x_`` custom
columns (the specification reserves the ``x_`` prefix for provider-defined columns).

Columns always null here, and why (see docs/reconcile.md):

* AvailabilityZone, RegionId, RegionName -- OpenAI's API is not billed per region;
* BillingAccountType, SubAccountType -- OpenAI has one kind of account and one kind of project;
* CapacityReservationId, CapacityReservationStatus -- no capacity reservations (Scale Tier units
  are not metered by the proxy);
* CommitmentDiscount* (Category, Id, Name, Quantity, Status, Type, Unit) -- the ledger prices
  calls at (possibly negotiated) rates, with no commitment-based discounts to amortize;
* InvoiceId -- OpenAI's invoice id is not known to the proxy;
* ResourceId, ResourceName, ResourceType -- API calls consume no provisioned resource;
* SkuPriceDetails -- the SKU's parts are in SkuId / SkuMeter / x_ columns;
* PricingCurrency* -- prices are in the billing currency (USD), no virtual currency;
* ListUnitPrice, ContractedUnitPrice, SkuPriceId -- null only on rows of calls the ledger has
  unpriced (``x_Unpriced`` true): their price is unknown, and a null says so where a 0 would lie.
"""

from __future__ import annotations

from typing import Final

FOCUS_VERSION: Final = "1.2"

# (name, kind) with kind one of: decimal, datetime, string, json, integer, boolean
COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("AvailabilityZone", "string"),
    ("BilledCost", "decimal"),
    ("BillingAccountId", "string"),
    ("BillingAccountName", "string"),
    ("BillingAccountType", "string"),
    ("BillingCurrency", "string"),
    ("BillingPeriodEnd", "datetime"),
    ("BillingPeriodStart", "datetime"),
    ("CapacityReservationId", "string"),
    ("CapacityReservationStatus", "string"),
    ("ChargeCategory", "string"),
    ("ChargeClass", "string"),
    ("ChargeDescription", "string"),
    ("ChargeFrequency", "string"),
    ("ChargePeriodEnd", "datetime"),
    ("ChargePeriodStart", "datetime"),
    ("CommitmentDiscountCategory", "string"),
    ("CommitmentDiscountId", "string"),
    ("CommitmentDiscountName", "string"),
    ("CommitmentDiscountQuantity", "decimal"),
    ("CommitmentDiscountStatus", "string"),
    ("CommitmentDiscountType", "string"),
    ("CommitmentDiscountUnit", "string"),
    ("ConsumedQuantity", "decimal"),
    ("ConsumedUnit", "string"),
    ("ContractedCost", "decimal"),
    ("ContractedUnitPrice", "decimal"),
    ("EffectiveCost", "decimal"),
    ("InvoiceId", "string"),
    ("InvoiceIssuerName", "string"),
    ("ListCost", "decimal"),
    ("ListUnitPrice", "decimal"),
    ("PricingCategory", "string"),
    ("PricingCurrency", "string"),
    ("PricingCurrencyContractedUnitPrice", "decimal"),
    ("PricingCurrencyEffectiveCost", "decimal"),
    ("PricingCurrencyListUnitPrice", "decimal"),
    ("PricingQuantity", "decimal"),
    ("PricingUnit", "string"),
    ("ProviderName", "string"),
    ("PublisherName", "string"),
    ("RegionId", "string"),
    ("RegionName", "string"),
    ("ResourceId", "string"),
    ("ResourceName", "string"),
    ("ResourceType", "string"),
    ("ServiceCategory", "string"),
    ("ServiceName", "string"),
    ("ServiceSubcategory", "string"),
    ("SkuId", "string"),
    ("SkuMeter", "string"),
    ("SkuPriceDetails", "json"),
    ("SkuPriceId", "string"),
    ("SubAccountId", "string"),
    ("SubAccountName", "string"),
    ("SubAccountType", "string"),
    ("Tags", "json"),
    # ours
    ("x_Model", "string"),
    ("x_TokenKind", "string"),
    ("x_ServiceTier", "string"),
    ("x_Team", "string"),
    ("x_Requests", "integer"),
    ("x_Unpriced", "boolean"),
    ("x_EstimatedRequests", "integer"),
)
COLUMN_NAMES: Final[tuple[str, ...]] = tuple(name for name, _ in COLUMNS)
COLUMN_KINDS: Final[dict[str, str]] = dict(COLUMNS)
