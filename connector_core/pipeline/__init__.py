"""What happens next to a document: fetch → record → build → submit → poll → report.

Each stage is a module of plain functions over a :class:`~connector_core.pipeline.context.PipelineContext`;
the pipeline is the only part of the connector that calls plugin hooks.
"""
