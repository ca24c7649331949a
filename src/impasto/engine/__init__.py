"""The engine: computes images, never prints, exits, or touches the network unasked."""

from impasto.engine.multiscale import render, schedule
from impasto.engine.params import RenderParams
from impasto.engine.scale import Progress

__all__ = ["Progress", "RenderParams", "render", "schedule"]
