import humanize


def score(x, model):
    return humanize.intcomma(model["weight"] * x)
