import requests

url = "https://sms.tinsight.tech/apiv2/sms/"

payload={'message': 'SMSFLOW c\'est génial', 'number': 'xxxxxxxxx'}

headers = {
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'
}

response = requests.request("POST", url, headers=headers, data=payload)

print(response.text)
