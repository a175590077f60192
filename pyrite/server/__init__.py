"""The REST + WebSocket server: a thin Starlette layer over the pyrite core."""
