"""python -m gradscope.diagnosis: prints the rule table for docs/diagnosis.md; paste it between the rules markers."""

from gradscope.diagnosis.rules import RULES_TABLE_BEGIN, RULES_TABLE_END, rules_table_markdown

print(RULES_TABLE_BEGIN)
print(rules_table_markdown())
print(RULES_TABLE_END)
