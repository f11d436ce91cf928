"""Kopf handlers: glue between Kubernetes events and the rules; every write a handler makes goes
through an adapter."""
