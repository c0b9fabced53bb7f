"""Small helpers shared by several test files."""


def with_generation_tags(template, fmt):
  """The same template with transformers' {% generation %} around assistant content + eot."""
  if fmt == "llama3":
    old = "{{- message['content'] | trim }}{{- '<|eot_id|>' }}"
    new = ("{%- if message['role'] == 'assistant' %}{% generation %}{{- message['content'] | trim"
           " + '<|eot_id|>' }}{% endgeneration %}{%- else %}" + old + "{%- endif %}")
  else:
    old = "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    new = ("{%- if message['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
           "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
           "{{- '\\n' }}{%- else %}" + old + "{%- endif %}")
  assert old in template
  return template.replace(old, new)
