"""The API's routers, one module per area; `serving.app` includes them all."""
