#!/bin/sh
# Run by `bentoml containerize` while building the image (bentofile*.yaml: docker.setup_script).
# The Bento carries sona's source, not an installed package, so give the image the `sona`
# command the CronJob manifests in docs/operations.md run (PYTHONPATH points at the source).
set -eu
printf '#!/bin/sh\nexec python -m serving.cli "$@"\n' > /usr/local/bin/sona
chmod 0755 /usr/local/bin/sona
