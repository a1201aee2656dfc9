"""HTTP for the operators' side of person linkage: train the model, review uncertain pairs, the
quality report. Admin only; the review list shows person fields, so it is personal data."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from services.ingest import linkage_model
from services.ingest import linkage_review as review
from services.ingest.deps import EngineDep, ReadDep, WriteDep, app_state
from services.ingest.linkage_fields import LinkageConfig
from shared.deps import AdminDep
from shared.errors import ProblemError

linkage = APIRouter(prefix="/v1/linkage", tags=["linkage"])


class ReviewDecision(BaseModel):
    decision: Literal["accept", "reject"]


class Label(BaseModel):
    provider: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    source_ref: str = Field(max_length=64)
    person: str = Field(max_length=64, description="the true person, in the labeller's own ids")


class LabelledSet(BaseModel):
    labels: list[Label] = Field(max_length=1_000_000)


def _config(request: Request) -> LinkageConfig:
    config: LinkageConfig | None = app_state(request.app).linkage
    if config is None:
        raise ProblemError(
            409,
            "Linkage is off: ingest has no CSP_INGEST_LINKAGE_KEY.",
            slug="linkage-off",
        )
    return config


@linkage.post("/model")
async def train_model(request: Request, _admin: AdminDep, engine: EngineDep) -> dict[str, Any]:
    """Train the probabilistic model on the records the hub holds; later pushes use it."""
    return await asyncio.to_thread(linkage_model.train, engine, _config(request))


@linkage.get("/reviews")
async def list_reviews(
    request: Request,
    _admin: AdminDep,
    connection: ReadDep,
    cursor: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Uncertain pairs awaiting clerical review, oldest first."""
    _config(request)
    return await asyncio.to_thread(review.pending_reviews, connection, cursor, limit)


@linkage.post("/reviews/{review_id}")
async def decide_review(
    request: Request, review_id: int, body: ReviewDecision, admin: AdminDep, connection: WriteDep
) -> dict[str, Any]:
    """Accept (the record's person joins the candidate's) or reject an uncertain pair."""
    _config(request)
    return await asyncio.to_thread(review.decide, connection, review_id, body.decision, admin.sub)


@linkage.get("/quality")
async def linkage_quality(
    request: Request, _admin: AdminDep, connection: ReadDep
) -> dict[str, Any]:
    """Link rates per dataset, the match-weight distribution, pending reviews, the model."""
    _config(request)
    return await asyncio.to_thread(review.quality_report, connection)


@linkage.post("/quality")
async def linkage_quality_against_labels(
    request: Request, body: LabelledSet, _admin: AdminDep, connection: ReadDep
) -> dict[str, Any]:
    """The quality report with pairwise precision and recall against a labelled set (a synthetic
    cohort's truth, or a clerically checked sample)."""
    _config(request)
    labels = [label.model_dump() for label in body.labels]

    def report() -> dict[str, Any]:
        return review.quality_report(connection, review.labelled_truth(connection, labels))

    return await asyncio.to_thread(report)
