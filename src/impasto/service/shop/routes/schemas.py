"""The JSON API's records, for validation and the OpenAPI schema.

``RenderOptions`` is derived from the engine's ``RenderParams`` (every field optional, same
types, limits and descriptions), never re-typed: a style's preset in the API is exactly a
set of render options. Options that name files or devices on the server are left out, so a
preset posted through the admin can never point a render at a server path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from impasto.engine.params import RenderParams
from impasto.service.core.models import JobStatus, OrderStatus
from impasto.service.core.untrusted import DbId

SERVER_ONLY_OPTIONS = frozenset({"init_image", "face_mask", "mask", "weights", "download", "device"})


def _optional_fields() -> dict[str, Any]:
    fields = {}
    for name, info in RenderParams.model_fields.items():
        if name in SERVER_ONLY_OPTIONS:
            continue
        # The field's constraints (ge, le, ...) live in its metadata: keep them.
        fields[name] = (info.annotation | None, Field(None, description=info.description,
                                                      **_constraints(info.metadata)))
    return fields


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        for key in ("ge", "gt", "le", "lt", "allow_inf_nan", "min_length", "max_length"):
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
    return out


RenderOptions = create_model("RenderOptions", __config__=ConfigDict(extra="forbid"), **_optional_fields())
RenderOptions.__doc__ = "Render options a style's preset sets (a subset of the engine's RenderParams)."


def preset_options(preset: dict[str, Any]) -> dict[str, Any]:
    """A preset as ``RenderOptions`` values (server-only options dropped)."""
    return {key: value for key, value in preset.items() if key not in SERVER_ONLY_OPTIONS}


class PreviewOut(BaseModel):
    """One style's preview of a portrait, with its live progress."""

    id: int
    style: str
    title: str
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    iteration: int
    total: int
    image_url: str | None = Field(description="the finished preview, or while it paints its latest snapshot, "
                                              "or before that its feed-forward sketch (a redirect to a "
                                              "short-lived signed URL)")
    sketch: bool = Field(False, description="image_url is the feed-forward sketch, not yet the painted preview")
    eta_seconds: int | None = Field(None, description="seconds left while it paints, at its pace so far")
    order_url: str | None = Field(description="the page to order a print of this preview, once it is done")


class OrderSummary(BaseModel):
    number: str
    status: OrderStatus
    print_size: str
    url: str
    print_progress: float
    download_url: str | None = Field(description="mints a fresh signed download URL on each request")


class PortraitOut(BaseModel):
    """A portrait: its previews (one per catalog style) and the prints ordered from them."""

    id: str = Field(description="the unguessable id in every URL of this portrait")
    url: str
    photo_url: str
    events_url: str = Field(description="server-sent events: a 'portrait' event with this record on "
                                        "every change, 'done' when nothing renders any more")
    created_at: datetime
    previews: list[PreviewOut]
    orders: list[OrderSummary]
    done: bool


class AddressIn(BaseModel):
    """Where the print goes, as print labs take it (checked further by the shop: 422 naming the field)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200, examples=["Ada Lovelace"])
    line1: str = Field(max_length=200, examples=["12 St James's Square"])
    line2: str = Field("", max_length=200)
    city: str = Field(max_length=100, examples=["London"])
    region: str = Field("", max_length=100, description="state, province or county, where the post uses one")
    postal_code: str = Field("", max_length=20, examples=["SW1Y 4LB"],
                             description="required except in countries without postal codes")
    country: str = Field(min_length=2, max_length=2, examples=["GB"], description="ISO 3166-1 alpha-2")
    phone: str = Field("", max_length=40, description="optional: for the carrier")


class AddressOut(BaseModel):
    name: str
    line1: str
    line2: str
    city: str
    region: str
    postal_code: str
    country: str = Field(description="ISO 3166-1 alpha-2; empty on orders placed before structured addresses")
    phone: str


class OrderIn(BaseModel):
    """A print of one finished preview."""

    model_config = ConfigDict(extra="forbid")

    preview_id: DbId = Field(description="the id of a finished preview of this portrait")
    print_size: str = Field(description=RenderParams.model_fields["print_size"].description.split(":")[0]
                            + "; one of GET /api/v1/prints", examples=["8x10in"])
    shipping_address: AddressIn
    payment_method: str = Field("", description="one of GET /api/v1/prints' payment_methods "
                                                "(empty: the shop's own)")


class OrderOut(OrderSummary):
    price_cents: int = Field(description="in the currency's minor units, from the shop's prices")
    currency: str
    shipping_address: AddressOut
    payment_method: str
    payment_instructions: str | None
    payment_url: str | None = Field(None, description="while awaiting payment: the hosted checkout to pay on "
                                                      "(the print is painted once it is paid)")
    refunded: bool = False
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    created_at: datetime
    ready_at: datetime | None
    preview_image_url: str | None
    download_expires_at: datetime | None


class StyleOut(BaseModel):
    name: str
    title: str
    provenance: str = Field("", description="where the painting comes from, one line")
    image_url: str
    preset: RenderOptions  # type: ignore[valid-type]


class PrintOption(BaseModel):
    size: str
    price_cents: int
    currency: str


class PrintsOut(BaseModel):
    prints: list[PrintOption]
    payment_methods: dict[str, str] = Field(description="name → what the customer is told")
