import requests

url = "https://sms.tinsight.tech/auth2/get_token_auth/"

payload={'username': 'xxxxx','password': 'xxxxxx'}

response = requests.request("POST", url, data=payload)

print(response.text)
