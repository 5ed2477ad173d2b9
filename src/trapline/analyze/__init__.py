"""Analyses over the store: campaigns, botnets, networks, timeline, takedown impact."""
