"""Tests of the Python client, the idlink ingest / resolve commands and a Node.js client."""
