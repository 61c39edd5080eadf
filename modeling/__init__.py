"""mycelium.modeling: the torch model classes that training builds and export loads.

Training (``mycelium.train``) and export (``mycelium.export``) both import them from here,
so neither imports the other for a model definition. The classes need torch and
transformers (the ``train`` or ``export`` extra) and live in submodules, so importing this
package for its names loads neither; the runtime never imports it.

- ``span_group.BertForSpanGroupClassification``: the span-group classifier (one encoder
  pass per problem), named ``SPAN_GROUP_CLASS`` in config.json's ``architectures``.
"""

SPAN_GROUP_CLASS = "BertForSpanGroupClassification"
