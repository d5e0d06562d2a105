"""The engine: facts and bank events in, rules evaluated per ATM, interventions out."""
