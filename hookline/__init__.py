"""hookline: Kubernetes-native webhook delivery.

Import map: ``hookline.sender`` lives in the top-level ``sender/`` folder (data plane) and
``hookline.operator`` in ``operator/`` (control plane); ``hookline`` itself holds the CLI and dev mode.
"""

__version__ = "0.1.0"
USER_AGENT = f"hookline/{__version__}"
