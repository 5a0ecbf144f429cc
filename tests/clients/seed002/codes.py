import requests

url = "https://sms.tinsight.tech/apiv2/smscode/?id=11"

payload={'phone_number': 'XXXXXXXXX'}
headers = {
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'
}

response = requests.request("GET", url, headers=headers, data=payload)

print(response.text)
